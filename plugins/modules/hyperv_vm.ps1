#!powershell

# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

#AnsibleRequires -CSharpUtil Ansible.Basic
#AnsibleRequires -PowerShell ansible_collections.rum.pool.plugins.module_utils._HyperV

# The documentation is in hyperv_vm.py; tests/unit/windows checks that this spec agrees with it.
$spec = @{
    options = @{
        name = @{ type = 'str'; required = $true }
        state = @{ type = 'str'; default = 'running'; choices = @('running', 'present', 'stopped', 'restarted', 'absent') }
        template = @{ type = 'path' }
        disk_type = @{ type = 'str'; default = 'differencing'; choices = @('differencing', 'copy') }
        path = @{ type = 'path' }
        vcpus = @{ type = 'int'; default = 2 }
        memory_mb = @{ type = 'int'; default = 4096 }
        dynamic_memory = @{ type = 'bool'; default = $false }
        memory_minimum_mb = @{ type = 'int' }
        memory_maximum_mb = @{ type = 'int' }
        switch_name = @{ type = 'str' }
        vlan_id = @{ type = 'int' }
        secure_boot = @{ type = 'bool'; default = $true }
        secure_boot_template = @{
            type = 'str'
            default = 'MicrosoftWindows'
            choices = @('MicrosoftWindows', 'MicrosoftUEFICertificateAuthority', 'OpenSourceShieldedVM')
        }
        seed_iso = @{ type = 'path' }
        kvp_items = @{ type = 'dict'; default = @{} }
        labels = @{ type = 'dict'; default = @{} }
        wait_for = @{ type = 'str'; default = 'none'; choices = @('none', 'heartbeat', 'ip') }
        wait_timeout = @{ type = 'int'; default = 600 }
    }
    supports_check_mode = $true
}
$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)

try {
    $outcome = Invoke-RumVm -Params $module.Params -CheckMode $module.CheckMode
}
catch {
    $module.FailJson("hyperv_vm: $($_.Exception.Message)", $_)
}

foreach ($warning in $outcome.warnings) {
    $module.Warn($warning)
}
$module.Result.changed = $outcome.changed
$module.Result.changes = $outcome.changes
$module.Result.vm = $outcome.vm
$module.Diff.before = $outcome.before
$module.Diff.after = $outcome.after
$module.ExitJson()
