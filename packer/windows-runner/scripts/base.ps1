# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Base settings of the runner template: UTC, long paths, no hibernation file, the high performance
# power plan, no Server Manager at logon.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
Set-TimeZone -Id 'UTC'
New-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem' -Name 'LongPathsEnabled' -Value 1 -PropertyType DWord -Force | Out-Null
& powercfg.exe /hibernate off
& powercfg.exe /setactive 8c5e7fda-e8bf-4a96-9a85-a6e23a8c635c
$serverManager = Get-ScheduledTask -TaskName 'ServerManager' -ErrorAction SilentlyContinue
if ($null -ne $serverManager) {
    Disable-ScheduledTask -InputObject $serverManager | Out-Null
}
Write-Host 'base settings done'
