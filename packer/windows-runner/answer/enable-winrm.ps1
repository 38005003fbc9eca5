# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Runs once at the build VM's first logon (Autounattend.xml): a WinRM HTTPS listener with a
# self-signed certificate and basic authentication, so that Packer can connect. Only for the build:
# scripts/finish.ps1 removes all of it before sysprep.
$ErrorActionPreference = 'Stop'
Get-NetConnectionProfile | Set-NetConnectionProfile -NetworkCategory Private
Enable-PSRemoting -SkipNetworkProfileCheck -Force | Out-Null
$certificate = New-SelfSignedCertificate -DnsName $env:COMPUTERNAME -CertStoreLocation 'Cert:\LocalMachine\My' -FriendlyName 'rum.pool build WinRM'
New-WSManInstance -ResourceURI 'winrm/config/Listener' -SelectorSet @{ Address = '*'; Transport = 'HTTPS' } -ValueSet @{ CertificateThumbprint = $certificate.Thumbprint } | Out-Null
Set-Item -Path 'WSMan:\localhost\Service\Auth\Basic' -Value $true
New-NetFirewallRule -DisplayName 'rum.pool build: WinRM HTTPS' -Direction Inbound -Protocol TCP -LocalPort 5986 -Action Allow | Out-Null
Restart-Service -Name 'WinRM'
