# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Shrink the template: superseded components, temporary files, then TRIM so that Hyper-V can
# compact the dynamic VHDX (Packer runs Optimize-VHD on it after the build).
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
& dism.exe /Online /Cleanup-Image /StartComponentCleanup /ResetBase /Quiet
if ($LASTEXITCODE -ne 0) {
    Write-Host "dism component clean-up ended with $LASTEXITCODE (the template is only larger)"
}
foreach ($folder in @($env:TEMP, (Join-Path -Path $env:SystemRoot -ChildPath 'Temp'))) {
    Get-ChildItem -LiteralPath $folder -Force -ErrorAction SilentlyContinue | Remove-Item -Recurse -Force -ErrorAction SilentlyContinue
}
Optimize-Volume -DriveLetter C -ReTrim
Write-Host 'clean-up done'
