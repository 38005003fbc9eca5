# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Pester 5 tests of the decisions in plugins/module_utils/_HyperV.psm1 (what hyperv_vm and
# hyperv_vm_info do), with the Hyper-V cmdlets mocked. Run: make pester (or
# pwsh -File tests/windows/run-pester.ps1). Runs on Windows PowerShell 5.1 or PowerShell 7, with or
# without Hyper-V: where a cmdlet is missing, a stand-in with exactly the parameters recorded in
# tests/data/hyperv_cmdlets.json is defined first, so a call with a wrong parameter fails here too.

BeforeAll {
    $repo = Resolve-Path -Path (Join-Path -Path $PSScriptRoot -ChildPath '../../..')
    $table = Get-Content -LiteralPath (Join-Path -Path $repo -ChildPath 'tests/data/hyperv_cmdlets.json') -Raw | ConvertFrom-Json
    $common = @('Verbose', 'Debug', 'ErrorAction', 'WarningAction', 'InformationAction', 'ErrorVariable',
        'WarningVariable', 'InformationVariable', 'OutVariable', 'OutBuffer', 'PipelineVariable')
    foreach ($cmdlet in $table.cmdlets.PSObject.Properties) {
        if (Get-Command -Name $cmdlet.Name -ErrorAction SilentlyContinue) {
            continue
        }
        $names = @()
        foreach ($set in $cmdlet.Value.sets.PSObject.Properties) {
            $names += $set.Value.mandatory
            $names += $set.Value.optional
        }
        $declared = foreach ($parameter in ($names | Sort-Object -Unique)) {
            if ($common -contains $parameter) { continue }
            if ($cmdlet.Value.switches -contains $parameter) { "[switch]`$$parameter" } else { "`$$parameter" }
        }
        $body = '[CmdletBinding()] param(' + ($declared -join ', ') + ')'
        Set-Item -Path "Function:\global:$($cmdlet.Name)" -Value ([scriptblock]::Create($body))
    }
    Import-Module -Name (Join-Path -Path $repo -ChildPath 'plugins/module_utils/_HyperV.psm1') -Force

    if ($IsLinux -or $IsMacOS) {
        $script:Root = '/rum/vms'
        $script:Template = '/rum/templates/windows-runner.vhdx'
    }
    else {
        $script:Root = 'D:\rum\vms'
        $script:Template = 'D:\rum\templates\windows-runner.vhdx'
    }
    $script:Folder = Join-Path -Path $script:Root -ChildPath 'ci-1'
    $script:Seed = Join-Path -Path $script:Folder -ChildPath 'seed.iso'
    $script:Disk = Join-Path -Path (Join-Path -Path $script:Folder -ChildPath 'Virtual Hard Disks') -ChildPath 'ci-1.vhdx'

    function New-TestParams {
        param([hashtable]$Override = @{})
        $params = @{
            name = 'ci-1'; state = 'present'; template = $script:Template; disk_type = 'differencing'
            path = $script:Root; vcpus = 2; memory_mb = 4096; dynamic_memory = $false
            memory_minimum_mb = $null; memory_maximum_mb = $null; switch_name = 'rum'; vlan_id = $null
            secure_boot = $true; secure_boot_template = 'MicrosoftWindows'; seed_iso = $script:Seed
            kvp_items = @{}; labels = @{ pool = 'ci'; slot = 'ci-1' }; wait_for = 'none'; wait_timeout = 0
        }
        foreach ($key in $Override.Keys) {
            $params[$key] = $Override[$key]
        }
        return $params
    }

    function New-TestVm {
        param([string]$State = 'Running', [string]$Notes = $null, [int]$Cpus = 2)
        if ($null -eq $Notes -or $Notes -eq '') {
            $Notes = ConvertTo-RumNotes -Record @{
                labels = @{ pool = 'ci'; slot = 'ci-1' }
                files = @{ folder = $script:Folder; disk = $script:Disk; seed = $script:Seed }
                template = $script:Template
                disk_type = 'differencing'
            }
        }
        return [pscustomobject]@{
            Name = 'ci-1'; Id = [guid]'6f1a3b52-9d6e-4f1b-8a77-0d3c5e2f4a10'; State = $State; Notes = $Notes
            ProcessorCount = $Cpus; MemoryStartup = 4096 * 1048576; DynamicMemoryEnabled = $false
            MemoryMinimum = 512 * 1048576; MemoryMaximum = 1048576 * 1048576; CheckpointType = 'Disabled'
            AutomaticStopAction = 'TurnOff'; AutomaticStartAction = 'Nothing'; Heartbeat = 'OkApplicationsHealthy'
            Generation = 2
        }
    }

    function Set-HostMocks {
        # A host where the template, the seed and the switch exist and the VM folder does not (yet).
        Mock -ModuleName _HyperV Test-Path { $true } -ParameterFilter { $PathType -eq 'Leaf' }
        Mock -ModuleName _HyperV Test-Path { $false } -ParameterFilter { $PathType -ne 'Leaf' }
        Mock -ModuleName _HyperV Get-VMSwitch { [pscustomobject]@{ Name = 'rum' } }
        Mock -ModuleName _HyperV New-Item { [pscustomobject]@{ FullName = $Path } }
        Mock -ModuleName _HyperV Get-VMNetworkAdapter {
            [pscustomobject]@{ SwitchName = 'rum'; MacAddress = '00155D010203'; IPAddresses = @('10.1.2.3', 'fe80::1') }
        }
        Mock -ModuleName _HyperV Get-VMNetworkAdapterVlan { [pscustomobject]@{ OperationMode = 'Untagged'; AccessVlanId = 0 } }
        Mock -ModuleName _HyperV Get-VMDvdDrive { [pscustomobject]@{ Path = $script:Seed } }
        Mock -ModuleName _HyperV Get-VMFirmware { [pscustomobject]@{ SecureBoot = 'On'; SecureBootTemplate = 'MicrosoftWindows' } }
        Mock -ModuleName _HyperV Get-VMHardDiskDrive { [pscustomobject]@{ Path = $script:Disk } }
        Mock -ModuleName _HyperV Get-RumKvpItems { @{} }
        Mock -ModuleName _HyperV Set-RumKvpItems { $null }
        Mock -ModuleName _HyperV Start-Sleep { $null }
        foreach ($name in @('New-VHD', 'Copy-Item', 'Set-VMMemory', 'Set-VMFirmware', 'Add-VMDvdDrive', 'Set-VMDvdDrive',
                'Remove-VMDvdDrive', 'Set-VMNetworkAdapterVlan', 'Connect-VMNetworkAdapter', 'Remove-Item', 'Restart-VM')) {
            Mock -ModuleName _HyperV $name { $null }
        }
        Mock -ModuleName _HyperV Set-VM { if ($Notes) { $script:Vm.Notes = $Notes }; if ($ProcessorCount) { $script:Vm.ProcessorCount = $ProcessorCount } }
        Mock -ModuleName _HyperV Start-VM { $script:Vm.State = 'Running' }
        Mock -ModuleName _HyperV Stop-VM { $script:Vm.State = 'Off' }
        Mock -ModuleName _HyperV Remove-VM { $script:Vm = $null }
        Mock -ModuleName _HyperV Get-VM { if ($null -ne $script:Vm) { $script:Vm } }
    }
}


Describe 'Notes record' {
    It 'round-trips labels and files behind the marker line' {
        $notes = ConvertTo-RumNotes -Record @{ labels = @{ pool = 'ci'; created_at = '1700000000' }; files = @{ disk = 'D:\x\y.vhdx' } }
        $notes.Split("`n")[0] | Should -Be '#rum.pool v1'
        $record = ConvertFrom-RumNotes -Notes $notes
        $record.labels.pool | Should -Be 'ci'
        $record.labels.created_at | Should -Be '1700000000'
        $record.files.disk | Should -Be 'D:\x\y.vhdx'
    }

    It 'says a VM without the marker is not ours' {
        ConvertFrom-RumNotes -Notes 'my own VM, hands off' | Should -BeNullOrEmpty
        ConvertFrom-RumNotes -Notes '' | Should -BeNullOrEmpty
        ConvertFrom-RumNotes -Notes "x`n#rum.pool v1" | Should -BeNullOrEmpty
    }

    It 'refuses a marker followed by a broken record' {
        { ConvertFrom-RumNotes -Notes "#rum.pool v1`n{not json" } | Should -Throw '*not JSON*'
        { ConvertFrom-RumNotes -Notes "#rum.pool v1`n{""labels"": 5}" } | Should -Throw "*'labels' object*"
    }
}


Describe 'State words for the planner' {
    It 'maps <state> to <word>' -TestCases @(
        @{ state = 'Running'; word = 'running' }, @{ state = 'Off'; word = 'shutoff' }, @{ state = 'Saved'; word = 'shutoff' },
        @{ state = 'Paused'; word = 'paused' }, @{ state = 'Stopping'; word = 'shutdown' }, @{ state = 'OffCritical'; word = 'crashed' },
        @{ state = 'SomethingNew'; word = 'nostate' }
    ) {
        Get-RumLibvirtState -State $state | Should -Be $word
    }

    It 'writes MACs as libvirt does' {
        ConvertTo-RumMac -Mac '00155D010203' | Should -Be '00:15:5d:01:02:03'
    }
}


Describe 'hyperv_vm creates' {
    BeforeEach {
        $script:Vm = $null
        Set-HostMocks
        Mock -ModuleName _HyperV New-VM { $script:Vm = New-TestVm -State 'Off' -Notes 'x'; $script:Vm }
    }

    It 'makes a differencing disk of the template, the VM, its settings and seed, and starts it' {
        $outcome = Invoke-RumVm -Params (New-TestParams @{ state = 'running' })
        $outcome.changed | Should -BeTrue
        Should -Invoke -ModuleName _HyperV New-VHD -Times 1 -Exactly -ParameterFilter {
            $Differencing -and $ParentPath -eq $script:Template -and $Path -eq $script:Disk
        }
        Should -Invoke -ModuleName _HyperV Copy-Item -Times 0 -Exactly
        Should -Invoke -ModuleName _HyperV New-VM -Times 1 -Exactly -ParameterFilter {
            $Generation -eq 2 -and $VHDPath -eq $script:Disk -and $SwitchName -eq 'rum' -and $Path -eq $script:Root -and
            $MemoryStartupBytes -eq 4294967296 -and -not $NewVHDPath
        }
        Should -Invoke -ModuleName _HyperV Set-VM -ParameterFilter {
            $ProcessorCount -eq 2 -and "$CheckpointType" -eq 'Disabled' -and "$AutomaticStopAction" -eq 'TurnOff' -and
            $Notes -like "#rum.pool v1`n*"
        }
        Should -Invoke -ModuleName _HyperV Set-VMFirmware -ParameterFilter { "$EnableSecureBoot" -eq 'On' -and $SecureBootTemplate -eq 'MicrosoftWindows' }
        Should -Invoke -ModuleName _HyperV Add-VMDvdDrive -Times 1 -Exactly -ParameterFilter { $Path -eq $script:Seed }
        Should -Invoke -ModuleName _HyperV Start-VM -Times 1 -Exactly
        $record = ConvertFrom-RumNotes -Notes $script:Vm.Notes
        $record.labels.slot | Should -Be 'ci-1'
        $record.files.disk | Should -Be $script:Disk
        $record.files.seed | Should -Be $script:Seed
        $outcome.vm.state | Should -Be 'running'
        $outcome.vm.labels.pool | Should -Be 'ci'
        $outcome.vm.mac | Should -Be '00:15:5d:01:02:03'
        $outcome.vm.ip | Should -Be '10.1.2.3'
    }

    It 'copies the template when asked' {
        Invoke-RumVm -Params (New-TestParams @{ disk_type = 'copy' }) | Out-Null
        Should -Invoke -ModuleName _HyperV Copy-Item -Times 1 -Exactly -ParameterFilter { $LiteralPath -eq $script:Template -and $Destination -eq $script:Disk }
        Should -Invoke -ModuleName _HyperV New-VHD -Times 0 -Exactly
    }

    It 'changes nothing in check mode' {
        $outcome = Invoke-RumVm -Params (New-TestParams @{ state = 'running' }) -CheckMode $true
        $outcome.changed | Should -BeTrue
        $outcome.changes[0] | Should -BeLike "create VM 'ci-1'*"
        $outcome.after.vcpus | Should -Be 2
        foreach ($name in @('New-Item', 'New-VHD', 'New-VM', 'Set-VM', 'Start-VM', 'Add-VMDvdDrive')) {
            Should -Invoke -ModuleName _HyperV $name -Times 0 -Exactly
        }
    }

    It 'fails before making anything when the <what> is missing' -TestCases @(
        @{ what = 'template'; override = @{ template = $null }; message = "*'template' is needed*" },
        @{ what = 'switch'; override = @{}; message = "*no virtual switch 'rum'*" }
    ) {
        if ($what -eq 'switch') { Mock -ModuleName _HyperV Get-VMSwitch { $null } }
        { Invoke-RumVm -Params (New-TestParams $override) } | Should -Throw $message
        Should -Invoke -ModuleName _HyperV New-Item -Times 0 -Exactly
        Should -Invoke -ModuleName _HyperV New-VHD -Times 0 -Exactly
    }

    It 'rolls back what it made when a step fails, with the cmdlet''s message' {
        Mock -ModuleName _HyperV New-VM { throw 'The operation failed because the file was not found.' }
        Mock -ModuleName _HyperV Test-Path { $true } -ParameterFilter { $LiteralPath -eq $script:Disk -and $script:DiskMade }
        Mock -ModuleName _HyperV New-VHD { $script:DiskMade = $true }
        $script:DiskMade = $false
        { Invoke-RumVm -Params (New-TestParams) } | Should -Throw "*creating the VM failed: The operation failed because the file was not found.*rolled back*"
        Should -Invoke -ModuleName _HyperV Remove-Item -Times 1 -Exactly -ParameterFilter { $LiteralPath -eq $script:Disk }
        Should -Invoke -ModuleName _HyperV Remove-VM -Times 0 -Exactly
    }

    It 'removes the VM too when a step after New-VM fails' {
        Mock -ModuleName _HyperV Set-VMFirmware { throw 'secure boot template not found' }
        { Invoke-RumVm -Params (New-TestParams) } | Should -Throw '*setting secure boot and the boot disk failed: secure boot template not found*'
        Should -Invoke -ModuleName _HyperV Remove-VM -Times 1 -Exactly
    }
}


Describe 'hyperv_vm converges an existing VM' {
    BeforeEach {
        $script:Vm = New-TestVm -State 'Running'
        Set-HostMocks
    }

    It 'changes nothing when everything matches' {
        $outcome = Invoke-RumVm -Params (New-TestParams @{ state = 'running' })
        $outcome.changed | Should -BeFalse
        $outcome.changes.Count | Should -Be 0
        foreach ($name in @('New-VM', 'New-VHD', 'Set-VM', 'Set-VMMemory', 'Start-VM', 'Stop-VM', 'Connect-VMNetworkAdapter')) {
            Should -Invoke -ModuleName _HyperV $name -Times 0 -Exactly
        }
        $outcome.before.labels.slot | Should -Be $outcome.after.labels.slot
    }

    It 'changes labels and the switch of a running VM in place' {
        $outcome = Invoke-RumVm -Params (New-TestParams @{ state = 'running'; switch_name = 'other'; labels = @{ pool = 'ci'; slot = 'ci-1'; runner_name = 'ci-1-abc123' } })
        $outcome.changed | Should -BeTrue
        Should -Invoke -ModuleName _HyperV Connect-VMNetworkAdapter -Times 1 -Exactly -ParameterFilter { $SwitchName -eq 'other' }
        (ConvertFrom-RumNotes -Notes $script:Vm.Notes).labels.runner_name | Should -Be 'ci-1-abc123'
        (ConvertFrom-RumNotes -Notes $script:Vm.Notes).files.disk | Should -Be $script:Disk
        Should -Invoke -ModuleName _HyperV Stop-VM -Times 0 -Exactly
    }

    It 'refuses a change that needs the VM off while it runs' {
        { Invoke-RumVm -Params (New-TestParams @{ state = 'running'; vcpus = 4 }) } | Should -Throw '*vcpus can change only while it is off*'
        Should -Invoke -ModuleName _HyperV Set-VM -Times 0 -Exactly
    }

    It 'stops, changes and starts it again with state=restarted' {
        $outcome = Invoke-RumVm -Params (New-TestParams @{ state = 'restarted'; vcpus = 4 })
        Should -Invoke -ModuleName _HyperV Stop-VM -Times 1 -Exactly
        Should -Invoke -ModuleName _HyperV Set-VM -Times 1 -Exactly -ParameterFilter { $ProcessorCount -eq 4 }
        Should -Invoke -ModuleName _HyperV Start-VM -Times 1 -Exactly
        $outcome.changes -join ';' | Should -BeLike '*change vcpus*'
    }

    It 'warns that a new template applies to new VMs only' {
        $outcome = Invoke-RumVm -Params (New-TestParams @{ state = 'running'; template = 'D:\other.vhdx' })
        $outcome.changed | Should -BeFalse
        $outcome.warnings[0] | Should -BeLike '*applies to new VMs only*'
    }

    It 'stops a running VM with state=stopped' {
        Invoke-RumVm -Params (New-TestParams @{ state = 'stopped' }) | Out-Null
        Should -Invoke -ModuleName _HyperV Stop-VM -Times 1 -Exactly -ParameterFilter { $Force -and -not $TurnOff }
    }

    It 'refuses a VM of that name that rum.pool did not make' {
        $script:Vm = New-TestVm -Notes 'a hand-made VM'
        { Invoke-RumVm -Params (New-TestParams) } | Should -Throw "*was not made by rum.pool*"
        { Invoke-RumVm -Params (New-TestParams @{ state = 'absent' }) } | Should -Throw "*was not made by rum.pool*"
        Should -Invoke -ModuleName _HyperV Remove-VM -Times 0 -Exactly
    }

    It 'fails after the timeout when the guest reports no address' {
        $script:Vm = New-TestVm -State 'Off'
        Mock -ModuleName _HyperV Start-VM { $script:Vm.State = 'Running'; $script:Vm.Heartbeat = 'NoContact' }
        Mock -ModuleName _HyperV Get-VMNetworkAdapter { [pscustomobject]@{ SwitchName = 'rum'; MacAddress = '00155D010203'; IPAddresses = @('169.254.3.4') } }
        { Invoke-RumVm -Params (New-TestParams @{ state = 'running'; wait_for = 'ip' }) } | Should -Throw '*not ready after 0 s*heartbeat NoContact, IPv4 addresses none*'
    }
}


Describe 'hyperv_vm removes' {
    BeforeEach {
        $script:Vm = New-TestVm -State 'Running'
        Set-HostMocks
        Mock -ModuleName _HyperV Test-Path { $true } -ParameterFilter { $PathType -ne 'Leaf' }
    }

    It 'turns the VM off, removes it and every file it recorded' {
        $outcome = Invoke-RumVm -Params (New-TestParams @{ state = 'absent' })
        $outcome.changed | Should -BeTrue
        Should -Invoke -ModuleName _HyperV Stop-VM -Times 1 -Exactly -ParameterFilter { $TurnOff }
        Should -Invoke -ModuleName _HyperV Remove-VM -Times 1 -Exactly
        foreach ($path in @($script:Disk, $script:Seed, $script:Folder)) {
            Should -Invoke -ModuleName _HyperV Remove-Item -Times 1 -Exactly -ParameterFilter { $LiteralPath -eq $path }
        }
    }

    It 'retries a file Hyper-V still holds' {
        $script:Tries = 0
        Mock -ModuleName _HyperV Remove-Item { $script:Tries++; if ($script:Tries -lt 3) { throw 'The process cannot access the file because it is being used by another process.' } } -ParameterFilter { $LiteralPath -eq $script:Disk }
        Invoke-RumVm -Params (New-TestParams @{ state = 'absent' }) | Out-Null
        $script:Tries | Should -Be 3
        Should -Invoke -ModuleName _HyperV Start-Sleep -Times 2 -Exactly
    }

    It 'leaves alone a recorded path rum.pool would not have made' {
        $script:Vm = New-TestVm -Notes (ConvertTo-RumNotes -Record @{ labels = @{}; files = @{ folder = $script:Root; disk = $script:Disk } })
        $outcome = Invoke-RumVm -Params (New-TestParams @{ state = 'absent' })
        Should -Invoke -ModuleName _HyperV Remove-Item -Times 0 -Exactly -ParameterFilter { $LiteralPath -eq $script:Root }
        $outcome.warnings[0] | Should -BeLike '*not removing folder*'
    }

    It 'does nothing in check mode' {
        $outcome = Invoke-RumVm -Params (New-TestParams @{ state = 'absent' }) -CheckMode $true
        $outcome.changed | Should -BeTrue
        foreach ($name in @('Stop-VM', 'Remove-VM', 'Remove-Item')) {
            Should -Invoke -ModuleName _HyperV $name -Times 0 -Exactly
        }
    }

    It 'reports no change when the VM is already gone' {
        $script:Vm = $null
        (Invoke-RumVm -Params (New-TestParams @{ state = 'absent' })).changed | Should -BeFalse
    }
}


Describe 'hyperv_vm_info' {
    BeforeEach {
        Set-HostMocks
        $theirs = New-TestVm -Notes 'somebody else''s'
        $theirs.Name = 'other'
        $broken = New-TestVm -Notes "#rum.pool v1`n{oops"
        $broken.Name = 'broken'
        $script:Listed = @((New-TestVm -State 'Off'), $theirs, $broken)
        Mock -ModuleName _HyperV Get-VM { $script:Listed }
    }

    It 'lists only rum.pool''s VMs, in rum_vm_info''s shape' {
        $listing = Get-RumVmList -Name $null -Labels @{ pool = 'ci' }
        $listing.vms.Count | Should -Be 1
        $vm = $listing.vms[0]
        $vm.name | Should -Be 'ci-1'
        $vm.state | Should -Be 'shutoff'
        $vm.ip | Should -BeNullOrEmpty
        foreach ($key in @('name', 'uuid', 'state', 'autostart', 'mac', 'macs', 'ip', 'ip_source', 'labels', 'ssh',
                'ssh_command', 'ssh_config', 'paths', 'config_hash', 'managed', 'domain_type')) {
            $vm.ContainsKey($key) | Should -BeTrue -Because "rum_vm_info returns $key"
        }
        $listing.warnings[0] | Should -BeLike "*'broken' skipped*"
    }

    It 'filters on labels' {
        (Get-RumVmList -Name $null -Labels @{ pool = 'other' }).vms.Count | Should -Be 0
    }
}
