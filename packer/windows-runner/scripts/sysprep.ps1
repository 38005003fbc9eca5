# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Packer's shutdown command: hands over to finish.ps1 in a SYSTEM task, so that finish.ps1 may take
# WinRM (this very connection) away before it runs sysprep, which shuts the VM down.
$ErrorActionPreference = 'Stop'
$action = New-ScheduledTaskAction -Execute (Join-Path -Path $PSHOME -ChildPath 'powershell.exe') -Argument '-NoProfile -ExecutionPolicy Bypass -File C:\rum-build\finish.ps1'
$principal = New-ScheduledTaskPrincipal -UserId 'NT AUTHORITY\SYSTEM' -LogonType ServiceAccount -RunLevel Highest
Register-ScheduledTask -TaskName 'rum-sysprep' -Action $action -Principal $principal -Force | Out-Null
Start-ScheduledTask -TaskName 'rum-sysprep'
Write-Host 'sysprep starts in a moment; the VM shuts down when it is done'
