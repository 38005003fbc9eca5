# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The last step of the build, as SYSTEM: remove what only the build needed (WinRM listener, basic
# authentication, firewall rule, certificate, the answer file copies that hold the build password),
# disable the built-in Administrator, then generalize with sysprep and cloudbase-init's Unattend.xml
# (its specialize pass names the computer from the seed) and shut down.
$ErrorActionPreference = 'Continue'
Start-Sleep -Seconds 10
foreach ($transport in @('HTTPS', 'HTTP')) {
    Remove-WSManInstance -ResourceURI 'winrm/config/Listener' -SelectorSet @{ Address = '*'; Transport = $transport }
}
Set-Item -Path 'WSMan:\localhost\Service\Auth\Basic' -Value $false
Remove-NetFirewallRule -DisplayName 'rum.pool build: WinRM HTTPS'
Get-ChildItem -Path 'Cert:\LocalMachine\My' | Where-Object { $_.FriendlyName -eq 'rum.pool build WinRM' } | Remove-Item -Force
Get-LocalUser | Where-Object { $_.SID.Value -like 'S-1-5-21-*-500' } | Disable-LocalUser
foreach ($answer in @('C:\Windows\Panther\unattend.xml', 'C:\Windows\Panther\Unattend', 'C:\Windows\System32\Sysprep\unattend.xml')) {
    Remove-Item -LiteralPath $answer -Recurse -Force -ErrorAction SilentlyContinue
}
Unregister-ScheduledTask -TaskName 'rum-sysprep' -Confirm:$false
Remove-Item -LiteralPath 'C:\rum-build' -Recurse -Force
$unattend = Join-Path -Path $env:ProgramFiles -ChildPath 'Cloudbase Solutions\Cloudbase-Init\conf\Unattend.xml'
& (Join-Path -Path $env:SystemRoot -ChildPath 'System32\Sysprep\sysprep.exe') /generalize /oobe /shutdown /quiet /mode:vm "/unattend:$unattend"
