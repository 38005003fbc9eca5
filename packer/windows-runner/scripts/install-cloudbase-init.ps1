# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# cloudbase-init: the service that, at every boot, reads the NoCloud seed rum.pool attaches as the
# VM's DVD and runs its user-data once per instance-id. Installed from its MSI (checked against
# CLOUDBASE_INIT_SHA256) to run as LocalSystem, with rum.pool's two configuration files.
. 'C:\rum-build\common.ps1'

$msi = Join-Path -Path $env:TEMP -ChildPath 'CloudbaseInitSetup_x64.msi'
Save-CheckedDownload -Uri $env:CLOUDBASE_INIT_URL -Path $msi -Checksum "$env:CLOUDBASE_INIT_SHA256" -What 'the cloudbase-init MSI'
$log = Join-Path -Path $env:TEMP -ChildPath 'cloudbase-init-install.log'
$arguments = @('/i', ('"' + $msi + '"'), '/qn', '/norestart', '/l*v', ('"' + $log + '"'), 'RUN_SERVICE_AS_LOCAL_SYSTEM=1')
$install = Start-Process -FilePath 'msiexec.exe' -ArgumentList $arguments -Wait -PassThru
if ($install.ExitCode -ne 0) {
    throw "msiexec failed with exit code $($install.ExitCode); its log is $log"
}
Remove-Item -LiteralPath $msi -Force

$conf = Join-Path -Path $env:ProgramFiles -ChildPath 'Cloudbase Solutions\Cloudbase-Init\conf'
foreach ($name in @('cloudbase-init.conf', 'cloudbase-init-unattend.conf')) {
    Copy-Item -LiteralPath (Join-Path -Path 'C:\rum-build' -ChildPath $name) -Destination (Join-Path -Path $conf -ChildPath $name) -Force
}
if (-not (Test-Path -LiteralPath (Join-Path -Path $conf -ChildPath 'Unattend.xml') -PathType Leaf)) {
    throw "the MSI installed no $conf\Unattend.xml: sysprep needs it"
}
Set-Service -Name 'cloudbase-init' -StartupType Automatic
Write-Host 'cloudbase-init installed (NoCloud seed, LocalSystem, started at boot)'
