# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The Hyper-V side of rum.pool's Windows modules (hyperv_vm, hyperv_vm_info). Internal to the
# collection, not a public API.
#
# The functions take plain values and return plain hashtables; the .ps1 modules only translate
# between Ansible.Basic and them, so Pester can drive every decision with mocked Hyper-V cmdlets.
# Names, paths, labels, the seed and the guest bootstrap are decided on the controller; what is
# left here is what only the Hyper-V host can do: look at the VM, compare, change, wait.
#
# Calls to Hyper-V, storage and core cmdlets use named parameters only, never pipeline input:
# tests/unit/windows checks every call against the parameter sets recorded from Microsoft's
# reference pages (tests/data/hyperv_cmdlets.json).

# The first line of a VM's Notes that marks it as made by rum.pool; a JSON record follows.
$script:NotesMarker = '#rum.pool v1'

# Hyper-V VM states (Microsoft.HyperV.PowerShell.VMState) in the libvirt vocabulary the pool's
# planner understands: running/blocked keep the slot, shutoff/paused/crashed/pmsuspended get it
# recreated, shutdown waits, anything else ('nostate') is left alone.
$script:StateMap = @{
    Other = 'nostate'
    Running = 'running'
    Off = 'shutoff'
    Stopping = 'shutdown'
    Saved = 'shutoff'
    Paused = 'paused'
    Starting = 'running'
    Reset = 'running'
    Saving = 'shutdown'
    Pausing = 'paused'
    Resuming = 'paused'
    FastSaved = 'shutoff'
    FastSaving = 'shutdown'
    ForceShutdown = 'shutdown'
    ForceReboot = 'running'
    Hibernated = 'pmsuspended'
    ComponentServicing = 'running'
    RunningCritical = 'crashed'
    OffCritical = 'crashed'
    StoppingCritical = 'crashed'
    SavedCritical = 'crashed'
    PausedCritical = 'crashed'
    StartingCritical = 'crashed'
    ResetCritical = 'crashed'
    SavingCritical = 'crashed'
    PausingCritical = 'crashed'
    ResumingCritical = 'crashed'
    FastSavedCritical = 'crashed'
    FastSavingCritical = 'crashed'
}

# Settings that Hyper-V changes only while the VM is off.
$script:ColdSettings = @('vcpus', 'memory_mb', 'dynamic_memory', 'memory_minimum_mb', 'memory_maximum_mb',
    'secure_boot', 'secure_boot_template', 'automatic_stop_action')

$script:NameRegex = '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'


function ConvertTo-RumPlain {
    <# ConvertFrom-Json objects (Windows PowerShell 5.1 has no -AsHashtable) as hashtables and arrays. #>
    param($Value)
    if ($null -eq $Value) {
        return $null
    }
    if ($Value -is [System.Management.Automation.PSCustomObject]) {
        $out = @{}
        foreach ($property in $Value.PSObject.Properties) {
            $out[$property.Name] = ConvertTo-RumPlain -Value $property.Value
        }
        return $out
    }
    if ($Value -is [System.Array]) {
        return , @(foreach ($item in $Value) { ConvertTo-RumPlain -Value $item })
    }
    return $Value
}


function ConvertTo-RumNotes {
    <# The Notes text of a VM rum.pool made: the marker line, then the record as one line of JSON. #>
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Record)
    $json = ConvertTo-Json -InputObject $Record -Compress -Depth 5
    return "$($script:NotesMarker)`n$json"
}


function ConvertFrom-RumNotes {
    <#
    The record in a VM's Notes: $null when the Notes do not start with the marker (not rum.pool's
    VM), an error when they do but what follows is not a JSON object with a labels mapping.
    #>
    param([AllowNull()][AllowEmptyString()][string]$Notes)
    if ([string]::IsNullOrEmpty($Notes)) {
        return $null
    }
    $lines = $Notes -split "`r?`n", 2
    if ($lines[0].Trim() -cne $script:NotesMarker) {
        return $null
    }
    $body = if ($lines.Count -gt 1) { $lines[1].Trim() } else { '' }
    try {
        $record = ConvertTo-RumPlain -Value (ConvertFrom-Json -InputObject $body)
    }
    catch {
        throw "its Notes start with '$($script:NotesMarker)' but the record after it is not JSON: $($_.Exception.Message)"
    }
    if ($record -isnot [hashtable] -or ($record.ContainsKey('labels') -and $record.labels -isnot [hashtable])) {
        throw "its Notes start with '$($script:NotesMarker)' but the record after it is not a JSON object with a 'labels' object"
    }
    if (-not $record.ContainsKey('labels')) {
        $record.labels = @{}
    }
    if (-not $record.ContainsKey('files') -or $record.files -isnot [hashtable]) {
        $record.files = @{}
    }
    return $record
}


function Get-RumLibvirtState {
    <# A VMState name in the planner's libvirt vocabulary; a name not in the table is 'nostate'. #>
    param([Parameter(Mandatory = $true)][string]$State)
    if ($script:StateMap.ContainsKey($State)) {
        return $script:StateMap[$State]
    }
    return 'nostate'
}


function ConvertTo-RumMac {
    <# Hyper-V's '00155D010203' as '00:15:5d:01:02:03' (what libvirt and cloud-init print). #>
    param([AllowEmptyString()][string]$Mac)
    $hex = ($Mac -replace '[^0-9A-Fa-f]', '').ToLowerInvariant()
    if ($hex.Length -ne 12) {
        return $null
    }
    return (($hex -split '(..)' | Where-Object { $_ }) -join ':')
}


function Get-RumIPv4 {
    <# The usable IPv4 addresses among what the guest reported (no link-local 169.254.x.x). #>
    param([AllowNull()][object[]]$Addresses)
    $out = @()
    foreach ($address in @($Addresses)) {
        $text = [string]$address
        if ($text -match '^\d{1,3}(\.\d{1,3}){3}$' -and -not $text.StartsWith('169.254.')) {
            $out += $text
        }
    }
    return , $out
}


function Get-RumOwnVm {
    <#
    The VM called $Name and its Notes record: @{ vm; record }, or $null when there is none.
    A VM of that name without the marker, or two VMs of that name, is an error: never touched.
    #>
    param([Parameter(Mandatory = $true)][string]$Name)
    $found = @(Get-VM -Name $Name -ErrorAction SilentlyContinue)
    if ($found.Count -eq 0) {
        return $null
    }
    if ($found.Count -gt 1) {
        throw "there are $($found.Count) VMs named '$Name' on this host: refusing to choose one"
    }
    $vm = $found[0]
    try {
        $record = ConvertFrom-RumNotes -Notes $vm.Notes
    }
    catch {
        throw "VM '$Name': $($_.Exception.Message)"
    }
    if ($null -eq $record) {
        throw "VM '$Name' exists and was not made by rum.pool (its Notes do not start with '$($script:NotesMarker)'): refusing to touch it"
    }
    return @{ vm = $vm; record = $record }
}


function Get-RumVmFacts {
    <# What hyperv_vm and hyperv_vm_info report about one VM: the shape of rum_vm_info's entries. #>
    param(
        [Parameter(Mandatory = $true)]$VM,
        [Parameter(Mandatory = $true)][hashtable]$Record,
        [bool]$Addresses = $true
    )
    $adapters = @(Get-VMNetworkAdapter -VM $VM)
    $macs = @(foreach ($adapter in $adapters) { ConvertTo-RumMac -Mac $adapter.MacAddress })
    $ips = @()
    if ($Addresses -and "$($VM.State)" -eq 'Running') {
        foreach ($adapter in $adapters) {
            $ips += Get-RumIPv4 -Addresses $adapter.IPAddresses
        }
    }
    $labels = @{}
    foreach ($key in $Record.labels.Keys) {
        $labels[$key] = [string]$Record.labels[$key]
    }
    return @{
        name = $VM.Name
        uuid = "$($VM.Id)"
        state = Get-RumLibvirtState -State "$($VM.State)"
        power_state = "$($VM.State)"
        domain_type = 'hyperv'
        heartbeat = "$($VM.Heartbeat)"
        autostart = ("$($VM.AutomaticStartAction)" -ne 'Nothing')
        mac = if ($macs.Count -gt 0) { $macs[0] } else { $null }
        macs = $macs
        ip = if ($ips.Count -gt 0) { $ips[0] } else { $null }
        ip_source = if ($ips.Count -gt 0) { 'kvp' } else { $null }
        ips = $ips
        labels = $labels
        managed = $true
        ssh = $null
        ssh_command = $null
        ssh_config = $null
        paths = $Record.files
        config_hash = $null
        generation = [int]$VM.Generation
        vcpus = [int]$VM.ProcessorCount
        memory_mb = [int64]($VM.MemoryStartup / 1048576)
        switch_name = if ($adapters.Count -gt 0) { $adapters[0].SwitchName } else { $null }
    }
}


function Get-RumVmList {
    <# rum.pool's VMs on this host (optionally one name, or those carrying all of $Labels), by name. #>
    param(
        [AllowNull()][string]$Name,
        [AllowNull()][System.Collections.IDictionary]$Labels,
        [bool]$Addresses = $true
    )
    $warnings = @()
    if ($Name) {
        $candidates = @(Get-VM -Name $Name -ErrorAction SilentlyContinue)
    }
    else {
        $candidates = @(Get-VM)
    }
    $vms = @()
    foreach ($vm in $candidates) {
        try {
            $record = ConvertFrom-RumNotes -Notes $vm.Notes
        }
        catch {
            $warnings += "VM '$($vm.Name)' skipped: $($_.Exception.Message)"
            continue
        }
        if ($null -eq $record) {
            continue
        }
        $matches_all = $true
        if ($null -ne $Labels) {
            foreach ($key in $Labels.Keys) {
                if (-not $record.labels.ContainsKey($key) -or [string]$record.labels[$key] -cne [string]$Labels[$key]) {
                    $matches_all = $false
                }
            }
        }
        if ($matches_all) {
            $vms += Get-RumVmFacts -VM $vm -Record $record -Addresses $Addresses
        }
    }
    $sorted = @($vms | Sort-Object -Property { $_.name })
    return @{ vms = $sorted; warnings = $warnings }
}


function Get-RumDesired {
    <#
    The settings hyperv_vm asks for, checked and in the units Hyper-V reports, plus the paths the VM's
    files get: <path>\<name> (its folder, Hyper-V's configuration included) and the system disk
    <path>\<name>\Virtual Hard Disks\<name>.vhdx.
    #>
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Params)
    $name = [string]$Params.name
    if ($name -notmatch $script:NameRegex) {
        throw "name '$name': 1 to 100 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
    }
    if ($Params.vcpus -lt 1) {
        throw "vcpus $($Params.vcpus): must be at least 1"
    }
    if ($Params.memory_mb -lt 32 -or $Params.memory_mb % 2 -ne 0) {
        throw "memory_mb $($Params.memory_mb): Hyper-V needs an even number of MB, at least 32"
    }
    $minimum = $Params.memory_mb
    $maximum = $Params.memory_mb
    if ($Params.dynamic_memory) {
        if ($null -ne $Params.memory_minimum_mb) { $minimum = $Params.memory_minimum_mb }
        if ($null -ne $Params.memory_maximum_mb) { $maximum = $Params.memory_maximum_mb }
        if ($minimum -gt $Params.memory_mb -or $maximum -lt $Params.memory_mb) {
            throw "dynamic memory needs memory_minimum_mb ($minimum) <= memory_mb ($($Params.memory_mb)) <= memory_maximum_mb ($maximum)"
        }
    }
    elseif ($null -ne $Params.memory_minimum_mb -or $null -ne $Params.memory_maximum_mb) {
        throw "memory_minimum_mb and memory_maximum_mb apply only with dynamic_memory=true"
    }
    if ($null -ne $Params.vlan_id -and ($Params.vlan_id -lt 1 -or $Params.vlan_id -gt 4094)) {
        throw "vlan_id $($Params.vlan_id): a VLAN id is 1 to 4094"
    }
    $labels = @{}
    if ($null -ne $Params.labels) {
        foreach ($key in $Params.labels.Keys) {
            $labels[[string]$key] = [string]$Params.labels[$key]
        }
    }
    $kvp = @{}
    if ($null -ne $Params.kvp_items) {
        foreach ($key in $Params.kvp_items.Keys) {
            $kvp[[string]$key] = [string]$Params.kvp_items[$key]
        }
    }
    $folder = $null
    $disk = $null
    if ($Params.path) {
        if (-not [System.IO.Path]::IsPathRooted([string]$Params.path)) {
            throw "path '$($Params.path)': must be an absolute path on the Hyper-V host"
        }
        $folder = Join-Path -Path $Params.path -ChildPath $name
        $disk = Join-Path -Path (Join-Path -Path $folder -ChildPath 'Virtual Hard Disks') -ChildPath "$name.vhdx"
    }
    return @{
        name = $name
        folder = $folder
        disk = $disk
        settings = [ordered]@{
            vcpus = [int]$Params.vcpus
            memory_mb = [int64]$Params.memory_mb
            dynamic_memory = [bool]$Params.dynamic_memory
            memory_minimum_mb = [int64]$minimum
            memory_maximum_mb = [int64]$maximum
            switch_name = $Params.switch_name
            vlan_id = $Params.vlan_id
            secure_boot = [bool]$Params.secure_boot
            secure_boot_template = if ($Params.secure_boot) { [string]$Params.secure_boot_template } else { $null }
            seed_iso = $Params.seed_iso
            checkpoints = 'Disabled'
            automatic_stop_action = 'TurnOff'
            labels = $labels
            kvp_items = $kvp
        }
    }
}


function Get-RumKvpItems {
    <# The host-to-guest KVP items of a VM, as a hashtable (WMI, root\virtualization\v2). #>
    param([Parameter(Mandatory = $true)]$VM)
    $items = @{}
    $system = Get-WmiObject -Namespace 'root\virtualization\v2' -Class 'Msvm_ComputerSystem' -Filter "Name='$($VM.Id)'"
    if ($null -eq $system) {
        return $items
    }
    $settings = @($system.GetRelated('Msvm_VirtualSystemSettingData') |
            Where-Object { $_.VirtualSystemType -eq 'Microsoft:Hyper-V:System:Realized' })
    foreach ($setting in $settings) {
        foreach ($kvp in @($setting.GetRelated('Msvm_KvpExchangeComponentSettingData'))) {
            foreach ($text in @($kvp.HostExchangeItems)) {
                if (-not $text) { continue }
                $doc = [xml]$text
                $key = ($doc.INSTANCE.PROPERTY | Where-Object { $_.NAME -eq 'Name' }).VALUE
                $value = ($doc.INSTANCE.PROPERTY | Where-Object { $_.NAME -eq 'Data' }).VALUE
                if ($null -ne $key) {
                    $items[[string]$key] = [string]$value
                }
            }
        }
    }
    return $items
}


function Wait-RumWmiJob {
    <# Wait for a Msvm method's job (return value 4096) and fail with its own error text. #>
    param([Parameter(Mandatory = $true)]$Result, [Parameter(Mandatory = $true)][string]$What)
    if ($Result.ReturnValue -eq 0) {
        return
    }
    if ($Result.ReturnValue -ne 4096) {
        throw "$What failed with WMI return value $($Result.ReturnValue)"
    }
    $job = [wmi]$Result.Job
    while ($job.JobState -eq 3 -or $job.JobState -eq 4) {
        Start-Sleep -Milliseconds 200
        $job = [wmi]$Result.Job
    }
    if ($job.JobState -ne 7) {
        throw "$What failed: $($job.ErrorDescription)"
    }
}


function Set-RumKvpItems {
    <# Add or modify host-to-guest KVP items; items not asked for are left as they are. #>
    param([Parameter(Mandatory = $true)]$VM, [Parameter(Mandatory = $true)][hashtable]$Items)
    $current = Get-RumKvpItems -VM $VM
    $service = Get-WmiObject -Namespace 'root\virtualization\v2' -Class 'Msvm_VirtualSystemManagementService'
    $system = Get-WmiObject -Namespace 'root\virtualization\v2' -Class 'Msvm_ComputerSystem' -Filter "Name='$($VM.Id)'"
    $class = [wmiclass]"\\$($service.__SERVER)\root\virtualization\v2:Msvm_KvpExchangeDataItem"
    foreach ($key in @($Items.Keys | Sort-Object)) {
        if ($current.ContainsKey($key) -and $current[$key] -ceq $Items[$key]) {
            continue
        }
        $item = $class.CreateInstance()
        $item.Name = $key
        $item.Data = $Items[$key]
        $item.Source = 0
        $text = $item.PSBase.GetText(1)
        if ($current.ContainsKey($key)) {
            Wait-RumWmiJob -Result $service.ModifyKvpItems($system, @($text)) -What "changing KVP item '$key'"
        }
        else {
            Wait-RumWmiJob -Result $service.AddKvpItems($system, @($text)) -What "adding KVP item '$key'"
        }
    }
}


function Get-RumCurrent {
    <# The settings of an existing VM, in the shape of Get-RumDesired's settings. #>
    param([Parameter(Mandatory = $true)]$VM, [Parameter(Mandatory = $true)][hashtable]$Record)
    $adapter = @(Get-VMNetworkAdapter -VM $VM) | Select-Object -First 1
    $vlan_id = $null
    if ($null -ne $adapter) {
        $vlan = Get-VMNetworkAdapterVlan -VMNetworkAdapter $adapter
        if ("$($vlan.OperationMode)" -eq 'Access') {
            $vlan_id = [int]$vlan.AccessVlanId
        }
    }
    $dvd = @(Get-VMDvdDrive -VM $VM) | Select-Object -First 1
    $firmware = Get-VMFirmware -VM $VM
    $secure = "$($firmware.SecureBoot)" -eq 'On'
    $labels = @{}
    foreach ($key in $Record.labels.Keys) {
        $labels[$key] = [string]$Record.labels[$key]
    }
    return [ordered]@{
        vcpus = [int]$VM.ProcessorCount
        memory_mb = [int64]($VM.MemoryStartup / 1048576)
        dynamic_memory = [bool]$VM.DynamicMemoryEnabled
        memory_minimum_mb = [int64]($VM.MemoryMinimum / 1048576)
        memory_maximum_mb = [int64]($VM.MemoryMaximum / 1048576)
        switch_name = if ($null -ne $adapter) { $adapter.SwitchName } else { $null }
        vlan_id = $vlan_id
        secure_boot = $secure
        secure_boot_template = if ($secure) { [string]$firmware.SecureBootTemplate } else { $null }
        seed_iso = if ($null -ne $dvd -and $dvd.Path) { [string]$dvd.Path } else { $null }
        checkpoints = "$($VM.CheckpointType)"
        automatic_stop_action = "$($VM.AutomaticStopAction)"
        labels = $labels
        kvp_items = Get-RumKvpItems -VM $VM
    }
}


function Compare-RumSettings {
    <# The names of the settings that differ; kvp_items compares only the items asked for. #>
    param([Parameter(Mandatory = $true)]$Current, [Parameter(Mandatory = $true)]$Desired)
    $differ = @()
    foreach ($key in $Desired.Keys) {
        $want = $Desired[$key]
        $have = $Current[$key]
        if ($key -eq 'labels') {
            $same = ($have.Count -eq $want.Count)
            foreach ($label in $want.Keys) {
                if (-not $have.ContainsKey($label) -or $have[$label] -cne $want[$label]) { $same = $false }
            }
        }
        elseif ($key -eq 'kvp_items') {
            $same = $true
            foreach ($item in $want.Keys) {
                if (-not $have.ContainsKey($item) -or $have[$item] -cne $want[$item]) { $same = $false }
            }
        }
        elseif ($key -eq 'memory_minimum_mb' -or $key -eq 'memory_maximum_mb') {
            # Hyper-V keeps the minimum and maximum of static memory too; they matter only when dynamic.
            $same = (-not $Desired.dynamic_memory) -or ($have -eq $want)
        }
        elseif ($key -eq 'seed_iso' -or $key -eq 'switch_name' -or $key -eq 'secure_boot_template') {
            $same = ([string]$have) -eq ([string]$want)
        }
        else {
            $same = ($have -eq $want)
        }
        if (-not $same) {
            $differ += $key
        }
    }
    return , $differ
}


function Remove-RumPath {
    <# Delete a file or folder, retrying while Hyper-V's worker process still holds it. #>
    param([Parameter(Mandatory = $true)][string]$Path, [int]$Tries = 10, [int]$DelaySeconds = 3)
    for ($try = 1; $true; $try++) {
        if (-not (Test-Path -LiteralPath $Path)) {
            return
        }
        try {
            Remove-Item -LiteralPath $Path -Recurse -Force -ErrorAction Stop
            return
        }
        catch {
            if ($try -ge $Tries) {
                throw "cannot remove '$Path' after $Tries tries: $($_.Exception.Message)"
            }
            Start-Sleep -Seconds $DelaySeconds
        }
    }
}


function Get-RumOwnFiles {
    <#
    The files of a VM's Notes record that absent removes, in order (disk, seed, folder). A recorded
    path that does not look like what rum.pool makes (a .vhdx/.vhd disk, an .iso seed, a folder named
    after the VM) is skipped and named: a hand-edited Notes never makes it delete something else.
    #>
    param([Parameter(Mandatory = $true)][string]$Name, [Parameter(Mandatory = $true)][hashtable]$Files)
    $paths = @()
    $skipped = @()
    $rules = [ordered]@{ disk = '[\\/][^\\/]+\.vhdx?$'; seed = '[\\/][^\\/]+\.iso$'; folder = '[\\/]' + [regex]::Escape($Name) + '[\\/]?$' }
    foreach ($key in $rules.Keys) {
        if (-not $Files.ContainsKey($key) -or -not $Files[$key]) {
            continue
        }
        $path = [string]$Files[$key]
        if ([System.IO.Path]::IsPathRooted($path) -and $path -match $rules[$key]) {
            $paths += $path
        }
        else {
            $skipped += "$key '$path' (not a path rum.pool makes for it)"
        }
    }
    return @{ paths = $paths; skipped = $skipped }
}


function New-RumVmRecord {
    <# The Notes record of a VM: its labels and the files that go with it. #>
    param([Parameter(Mandatory = $true)][hashtable]$Desired, [Parameter(Mandatory = $true)][System.Collections.IDictionary]$Params)
    $files = [ordered]@{ folder = $Desired.folder; disk = $Desired.disk }
    if ($Params.seed_iso) {
        $files.seed = [string]$Params.seed_iso
    }
    return [ordered]@{
        labels = $Desired.settings.labels
        files = $files
        template = [string]$Params.template
        disk_type = [string]$Params.disk_type
    }
}


function New-RumVm {
    <#
    Make the VM: folder, system disk (a differencing child of the template, or a copy), the VM
    (generation 2), its settings, the seed DVD and KVP items. Whatever was made is removed again
    when a step fails, and the error names the step and carries the cmdlet's own message.
    #>
    param([Parameter(Mandatory = $true)][hashtable]$Desired, [Parameter(Mandatory = $true)][System.Collections.IDictionary]$Params)
    $settings = $Desired.settings
    $made = @()
    $step = 'checking the inputs'
    try {
        $step = 'creating the VM folder'
        if (-not (Test-Path -LiteralPath $Desired.folder)) {
            New-Item -Path $Desired.folder -ItemType Directory -Force | Out-Null
            $made += @{ kind = 'folder'; path = $Desired.folder }
        }
        $disk_folder = Split-Path -Path $Desired.disk -Parent
        if (-not (Test-Path -LiteralPath $disk_folder)) {
            New-Item -Path $disk_folder -ItemType Directory -Force | Out-Null
        }
        if (Test-Path -LiteralPath $Desired.disk) {
            throw "the disk '$($Desired.disk)' already exists (left from an earlier VM?): remove it or pick another path"
        }
        if ($Params.disk_type -eq 'copy') {
            $step = "copying the template '$($Params.template)'"
            Copy-Item -LiteralPath $Params.template -Destination $Desired.disk -ErrorAction Stop
        }
        else {
            $step = "creating a differencing disk of '$($Params.template)'"
            New-VHD -Path $Desired.disk -ParentPath $Params.template -Differencing -ErrorAction Stop | Out-Null
        }
        $made += @{ kind = 'disk'; path = $Desired.disk }

        $step = 'creating the VM'
        $vm = New-VM -Name $Desired.name -Generation 2 -MemoryStartupBytes ($settings.memory_mb * 1048576) -VHDPath $Desired.disk -SwitchName $settings.switch_name -Path $Params.path -ErrorAction Stop
        $made += @{ kind = 'vm'; vm = $vm }

        $step = 'setting processors, checkpoints, stop action and Notes'
        $notes = ConvertTo-RumNotes -Record (New-RumVmRecord -Desired $Desired -Params $Params)
        Set-VM -VM $vm -ProcessorCount $settings.vcpus -CheckpointType Disabled -AutomaticCheckpointsEnabled $false -AutomaticStopAction TurnOff -AutomaticStartAction Nothing -Notes $notes -ErrorAction Stop
        $step = 'setting memory'
        Set-VMMemory -VM $vm -DynamicMemoryEnabled $settings.dynamic_memory -StartupBytes ($settings.memory_mb * 1048576) -ErrorAction Stop
        if ($settings.dynamic_memory) {
            Set-VMMemory -VM $vm -MinimumBytes ($settings.memory_minimum_mb * 1048576) -MaximumBytes ($settings.memory_maximum_mb * 1048576) -ErrorAction Stop
        }
        $step = 'setting secure boot and the boot disk'
        $boot_disk = Get-VMHardDiskDrive -VM $vm | Select-Object -First 1
        if ($settings.secure_boot) {
            Set-VMFirmware -VM $vm -EnableSecureBoot On -SecureBootTemplate $settings.secure_boot_template -FirstBootDevice $boot_disk -ErrorAction Stop
        }
        else {
            Set-VMFirmware -VM $vm -EnableSecureBoot Off -FirstBootDevice $boot_disk -ErrorAction Stop
        }
        if ($null -ne $settings.vlan_id) {
            $step = "setting VLAN $($settings.vlan_id)"
            Set-VMNetworkAdapterVlan -VM $vm -Access -VlanId $settings.vlan_id -ErrorAction Stop
        }
        if ($settings.seed_iso) {
            $step = "attaching the seed '$($settings.seed_iso)'"
            Add-VMDvdDrive -VM $vm -Path $settings.seed_iso -ErrorAction Stop
        }
        if ($settings.kvp_items.Count -gt 0) {
            $step = 'adding KVP items'
            Set-RumKvpItems -VM $vm -Items $settings.kvp_items
        }
        return $vm
    }
    catch {
        $failure = $_.Exception.Message
        $undone = @()
        [array]::Reverse($made)
        foreach ($thing in $made) {
            try {
                if ($thing.kind -eq 'vm') {
                    Remove-VM -VM $thing.vm -Force -ErrorAction Stop
                    $undone += "VM '$($Desired.name)'"
                }
                else {
                    Remove-RumPath -Path $thing.path
                    $undone += $thing.path
                }
            }
            catch {
                $undone += "NOT $($thing.kind) ($($_.Exception.Message))"
            }
        }
        $rolled = if ($undone.Count -gt 0) { "; rolled back: $($undone -join ', ')" } else { '' }
        throw "$step failed: $failure$rolled"
    }
}


function Set-RumVmSettings {
    <# Bring an existing VM's settings to $Desired; the caller has stopped it for cold settings. #>
    param(
        [Parameter(Mandatory = $true)]$VM,
        [Parameter(Mandatory = $true)][hashtable]$Record,
        [Parameter(Mandatory = $true)][hashtable]$Desired,
        [Parameter(Mandatory = $true)][string[]]$Keys
    )
    $settings = $Desired.settings
    if ($Keys -contains 'vcpus') {
        Set-VM -VM $VM -ProcessorCount $settings.vcpus -ErrorAction Stop
    }
    if ($Keys -contains 'checkpoints' -or $Keys -contains 'automatic_stop_action') {
        Set-VM -VM $VM -CheckpointType Disabled -AutomaticCheckpointsEnabled $false -AutomaticStopAction TurnOff -ErrorAction Stop
    }
    if ($Keys -contains 'memory_mb' -or $Keys -contains 'dynamic_memory' -or $Keys -contains 'memory_minimum_mb' -or $Keys -contains 'memory_maximum_mb') {
        Set-VMMemory -VM $VM -DynamicMemoryEnabled $settings.dynamic_memory -StartupBytes ($settings.memory_mb * 1048576) -ErrorAction Stop
        if ($settings.dynamic_memory) {
            Set-VMMemory -VM $VM -MinimumBytes ($settings.memory_minimum_mb * 1048576) -MaximumBytes ($settings.memory_maximum_mb * 1048576) -ErrorAction Stop
        }
    }
    if ($Keys -contains 'secure_boot' -or $Keys -contains 'secure_boot_template') {
        if ($settings.secure_boot) {
            Set-VMFirmware -VM $VM -EnableSecureBoot On -SecureBootTemplate $settings.secure_boot_template -ErrorAction Stop
        }
        else {
            Set-VMFirmware -VM $VM -EnableSecureBoot Off -ErrorAction Stop
        }
    }
    if ($Keys -contains 'switch_name') {
        $adapter = @(Get-VMNetworkAdapter -VM $VM) | Select-Object -First 1
        Connect-VMNetworkAdapter -VMNetworkAdapter $adapter -SwitchName $settings.switch_name -ErrorAction Stop
    }
    if ($Keys -contains 'vlan_id') {
        if ($null -eq $settings.vlan_id) {
            Set-VMNetworkAdapterVlan -VM $VM -Untagged -ErrorAction Stop
        }
        else {
            Set-VMNetworkAdapterVlan -VM $VM -Access -VlanId $settings.vlan_id -ErrorAction Stop
        }
    }
    if ($Keys -contains 'seed_iso') {
        $dvd = @(Get-VMDvdDrive -VM $VM) | Select-Object -First 1
        if (-not $settings.seed_iso) {
            if ($null -ne $dvd) {
                Remove-VMDvdDrive -VMDvdDrive $dvd -ErrorAction Stop
            }
        }
        elseif ($null -eq $dvd) {
            Add-VMDvdDrive -VM $VM -Path $settings.seed_iso -ErrorAction Stop
        }
        else {
            Set-VMDvdDrive -VMDvdDrive $dvd -Path $settings.seed_iso -ErrorAction Stop
        }
    }
    if ($Keys -contains 'labels' -or $Keys -contains 'seed_iso') {
        $record = @{ labels = $settings.labels; files = $Record.files }
        foreach ($key in $Record.Keys) {
            if (-not $record.ContainsKey($key)) { $record[$key] = $Record[$key] }
        }
        if ($settings.seed_iso) {
            $record.files.seed = [string]$settings.seed_iso
        }
        Set-VM -VM $VM -Notes (ConvertTo-RumNotes -Record $record) -ErrorAction Stop
    }
    if ($Keys -contains 'kvp_items') {
        Set-RumKvpItems -VM $VM -Items $settings.kvp_items
    }
}


function Wait-RumVmReady {
    <# Wait until the VM's heartbeat is OK (and, with -Address, the guest reports an IPv4 address). #>
    param(
        [Parameter(Mandatory = $true)]$VM,
        [Parameter(Mandatory = $true)][int]$TimeoutSeconds,
        [switch]$Address
    )
    $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
    while ($true) {
        $now = Get-VM -Id $VM.Id
        $beat = "$($now.Heartbeat)"
        $ips = @()
        foreach ($adapter in @(Get-VMNetworkAdapter -VM $now)) {
            $ips += Get-RumIPv4 -Addresses $adapter.IPAddresses
        }
        if ($beat -like 'Ok*' -and (-not $Address -or $ips.Count -gt 0)) {
            return
        }
        if ([DateTime]::UtcNow -ge $deadline) {
            $seen = if ($ips.Count -gt 0) { $ips -join ', ' } else { 'none' }
            throw "VM '$($VM.Name)' not ready after $TimeoutSeconds s: state $($now.State), heartbeat $beat, IPv4 addresses $seen"
        }
        Start-Sleep -Seconds 2
    }
}


function Invoke-RumVm {
    <#
    hyperv_vm: converge one VM to $Params (the module's options). Returns changed, vm (facts or $null),
    changes (what was or would be done), before/after (for --diff) and warnings. Errors are thrown with
    the failing step and the cmdlet's message; the module turns them into FailJson.
    #>
    param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Params, [bool]$CheckMode = $false)
    $state = [string]$Params.state
    $desired = Get-RumDesired -Params $Params
    $name = $desired.name
    $found = Get-RumOwnVm -Name $name
    $changes = @()
    $warnings = @()

    if ($state -eq 'absent') {
        if ($null -eq $found) {
            return @{ changed = $false; vm = $null; changes = $changes; before = @{ state = 'absent' }; after = @{ state = 'absent' }; warnings = $warnings }
        }
        $vm = $found.vm
        $before = Get-RumVmFacts -VM $vm -Record $found.record -Addresses $false
        $files = Get-RumOwnFiles -Name $name -Files $found.record.files
        foreach ($skipped in $files.skipped) {
            $warnings += "VM '$name': not removing $skipped"
        }
        $changes += "remove VM '$name'"
        foreach ($path in $files.paths) {
            $changes += "remove '$path'"
        }
        if (-not $CheckMode) {
            if ("$($vm.State)" -ne 'Off') {
                Stop-VM -VM $vm -TurnOff -Force -ErrorAction Stop
            }
            Remove-VM -VM $vm -Force -ErrorAction Stop
            foreach ($path in $files.paths) {
                Remove-RumPath -Path $path
            }
        }
        return @{ changed = $true; vm = $null; changes = $changes; before = $before; after = @{ state = 'absent' }; warnings = $warnings }
    }

    $after_state = @{ running = 'Running'; restarted = 'Running'; stopped = 'Off'; present = $null }[$state]
    if ($null -eq $found) {
        foreach ($required in @('template', 'path', 'switch_name')) {
            if (-not $Params[$required]) {
                throw "VM '$name' does not exist: '$required' is needed to create it"
            }
        }
        if (-not (Test-Path -LiteralPath $Params.template -PathType Leaf)) {
            throw "template '$($Params.template)' is not a file on this host"
        }
        if ($Params.seed_iso -and -not (Test-Path -LiteralPath $Params.seed_iso -PathType Leaf)) {
            throw "seed_iso '$($Params.seed_iso)' is not a file on this host: copy the seed there first"
        }
        if ($null -eq (Get-VMSwitch -Name $Params.switch_name -ErrorAction SilentlyContinue)) {
            throw "there is no virtual switch '$($Params.switch_name)' on this host"
        }
        $changes += "create VM '$name' ($($Params.disk_type) disk of '$($Params.template)' in '$($desired.folder)')"
        $before = @{ state = 'absent' }
        $after = [ordered]@{}
        foreach ($key in $desired.settings.Keys) { $after[$key] = $desired.settings[$key] }
        $after.state = if ($after_state) { $after_state } else { 'Off' }
        if ($CheckMode) {
            if ($after_state -eq 'Running') { $changes += "start VM '$name'" }
            return @{ changed = $true; vm = $null; changes = $changes; before = $before; after = $after; warnings = $warnings }
        }
        $vm = New-RumVm -Desired $desired -Params $Params
        $found = Get-RumOwnVm -Name $name
        $vm = $found.vm
    }
    else {
        $vm = $found.vm
        $current = Get-RumCurrent -VM $vm -Record $found.record
        $differ = Compare-RumSettings -Current $current -Desired $desired.settings
        $before = [ordered]@{}
        $after = [ordered]@{}
        foreach ($key in $current.Keys) { $before[$key] = $current[$key] }
        foreach ($key in $desired.settings.Keys) { $after[$key] = $desired.settings[$key] }
        $before.state = "$($vm.State)"
        $after.state = if ($after_state) { $after_state } else { "$($vm.State)" }
        if ($Params.template -and $found.record.template -and [string]$found.record.template -ne [string]$Params.template) {
            $warnings += "VM '$name' was made from '$($found.record.template)'; template '$($Params.template)' applies to new VMs only (recreate it to use the new template)"
        }
        $cold = @($differ | Where-Object { $script:ColdSettings -contains $_ })
        if ($cold.Count -gt 0 -and "$($vm.State)" -ne 'Off' -and $state -ne 'stopped' -and $state -ne 'restarted') {
            throw "VM '$name' is $($vm.State) and $($cold -join ', ') can change only while it is off: use state=restarted (or stopped)"
        }
        if ($differ.Count -gt 0) {
            $changes += "change $($differ -join ', ') of VM '$name'"
            if (-not $CheckMode) {
                if ($cold.Count -gt 0 -and "$($vm.State)" -ne 'Off') {
                    Stop-VM -VM $vm -Force -ErrorAction Stop
                    $changes += "stop VM '$name' to change $($cold -join ', ')"
                }
                Set-RumVmSettings -VM $vm -Record $found.record -Desired $desired -Keys $differ
                $vm = Get-VM -Id $vm.Id
            }
        }
    }

    $power = "$($vm.State)"
    if ($state -eq 'running' -and $power -ne 'Running') {
        $changes += "start VM '$name'"
        if (-not $CheckMode) { Start-VM -VM $vm -ErrorAction Stop }
    }
    elseif ($state -eq 'restarted') {
        if ($power -eq 'Running') {
            $changes += "restart VM '$name'"
            if (-not $CheckMode) { Restart-VM -VM $vm -Force -ErrorAction Stop }
        }
        else {
            $changes += "start VM '$name'"
            if (-not $CheckMode) { Start-VM -VM $vm -ErrorAction Stop }
        }
    }
    elseif ($state -eq 'stopped' -and $power -ne 'Off') {
        $changes += "stop VM '$name'"
        if (-not $CheckMode) { Stop-VM -VM $vm -Force -ErrorAction Stop }
    }

    if (-not $CheckMode -and ($state -eq 'running' -or $state -eq 'restarted') -and $Params.wait_for -ne 'none') {
        Wait-RumVmReady -VM $vm -TimeoutSeconds $Params.wait_timeout -Address:($Params.wait_for -eq 'ip')
    }

    $facts = $null
    if (-not $CheckMode -or $null -ne $found) {
        $now = Get-RumOwnVm -Name $name
        if ($null -ne $now) {
            $facts = Get-RumVmFacts -VM $now.vm -Record $now.record
        }
    }
    return @{ changed = ($changes.Count -gt 0); vm = $facts; changes = $changes; before = $before; after = $after; warnings = $warnings }
}


$exported = @(
    'ConvertTo-RumNotes', 'ConvertFrom-RumNotes', 'Get-RumLibvirtState', 'ConvertTo-RumMac',
    'Get-RumIPv4', 'Get-RumOwnVm', 'Get-RumVmFacts', 'Get-RumVmList', 'Get-RumDesired',
    'Get-RumCurrent', 'Compare-RumSettings', 'Get-RumOwnFiles', 'Remove-RumPath', 'New-RumVm', 'Set-RumVmSettings',
    'Wait-RumVmReady', 'Invoke-RumVm', 'Get-RumKvpItems', 'Set-RumKvpItems'
)
Export-ModuleMember -Function $exported
