# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# What the integration test checks on the host itself, as JSON: whether each path exists, and the
# type and parent of a VHDX.
param([Parameter(Mandatory = $true)][string]$Paths, [string]$Disk = '')
$ErrorActionPreference = 'Stop'
$exists = @{}
foreach ($path in ($Paths -split '\|')) {
    if ($path) {
        $exists[$path] = Test-Path -LiteralPath $path
    }
}
$vhd = $null
if ($Disk -and (Test-Path -LiteralPath $Disk)) {
    $info = Get-VHD -Path $Disk
    $vhd = @{ type = "$($info.VhdType)"; parent = $info.ParentPath }
}
ConvertTo-Json -InputObject @{ exists = $exists; vhd = $vhd } -Compress -Depth 3
