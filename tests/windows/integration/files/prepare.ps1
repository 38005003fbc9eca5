# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Integration test set-up on the Hyper-V host: the test folder and an empty 1 GB template VHDX
# (enough for every step that does not boot). Prints the template's path as JSON.
param([Parameter(Mandatory = $true)][string]$Root)
$ErrorActionPreference = 'Stop'
$templates = Join-Path -Path $Root -ChildPath 'templates'
if (-not (Test-Path -LiteralPath $templates)) {
    New-Item -Path $templates -ItemType Directory -Force | Out-Null
}
$template = Join-Path -Path $templates -ChildPath 'empty.vhdx'
if (-not (Test-Path -LiteralPath $template)) {
    New-VHD -Path $template -SizeBytes 1073741824 -Dynamic | Out-Null
}
ConvertTo-Json -InputObject @{ template = $template; vms = (Join-Path -Path $Root -ChildPath 'vms') } -Compress
