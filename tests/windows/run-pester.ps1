# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Run the Pester tests of the Hyper-V modules: pwsh -NoProfile -File tests/windows/run-pester.ps1
# (or powershell.exe on Windows). Needs Pester 5 (Install-Module -Name Pester -MinimumVersion 5.3).
$ErrorActionPreference = 'Stop'
$pester = Get-Module -ListAvailable -Name Pester | Where-Object { $_.Version -ge [version]'5.3' } | Sort-Object -Property Version -Descending | Select-Object -First 1
if ($null -eq $pester) {
    Write-Error 'Pester 5.3 or later is missing: Install-Module -Name Pester -MinimumVersion 5.3 -Scope CurrentUser'
    exit 2
}
Import-Module -Name $pester.Path
$configuration = New-PesterConfiguration
$configuration.Run.Path = Join-Path -Path $PSScriptRoot -ChildPath 'pester'
$configuration.Run.Exit = $true
$configuration.Output.Verbosity = 'Detailed'
Invoke-Pester -Configuration $configuration
