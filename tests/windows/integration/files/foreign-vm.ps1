# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Make (or remove) a VM that rum.pool did not make, to show that hyperv_vm refuses to touch it.
param([Parameter(Mandatory = $true)][string]$Name, [switch]$Remove)
$ErrorActionPreference = 'Stop'
$found = @(Get-VM -Name $Name -ErrorAction SilentlyContinue)
if ($Remove) {
    foreach ($vm in $found) {
        Remove-VM -VM $vm -Force
    }
}
elseif ($found.Count -eq 0) {
    New-VM -Name $Name -NoVHD -Generation 2 -MemoryStartupBytes 536870912 | Out-Null
    Set-VM -Name $Name -Notes 'made by hand'
}
