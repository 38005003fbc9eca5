#!powershell

# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

#AnsibleRequires -CSharpUtil Ansible.Basic
#AnsibleRequires -PowerShell ansible_collections.rum.pool.plugins.module_utils._HyperV

# The documentation is in hyperv_vm_info.py; tests/unit/windows checks that this spec agrees with it.
$spec = @{
    options = @{
        name = @{ type = 'str' }
        labels = @{ type = 'dict'; default = @{} }
        addresses = @{ type = 'bool'; default = $true }
    }
    supports_check_mode = $true
}
$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)

try {
    $listing = Get-RumVmList -Name $module.Params.name -Labels $module.Params.labels -Addresses $module.Params.addresses
}
catch {
    $module.FailJson("hyperv_vm_info: $($_.Exception.Message)", $_)
}

foreach ($warning in $listing.warnings) {
    $module.Warn($warning)
}
$module.Result.changed = $false
$module.Result.vms = $listing.vms
$module.ExitJson()
