# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Shared by the build's provisioner scripts (dot-sourced from C:\rum-build\common.ps1).
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
[System.Net.ServicePointManager]::SecurityProtocol = [System.Net.SecurityProtocolType]::Tls12

function Save-CheckedDownload {
    # Download $Uri to $Path and fail unless its SHA-256 is $Checksum (64 lowercase hex digits).
    param([string]$Uri, [string]$Path, [string]$Checksum, [string]$What)
    if ($Checksum -notmatch '^[0-9a-f]{64}$') {
        throw "${What}: the SHA-256 '$Checksum' is not 64 lowercase hex digits"
    }
    Write-Host "downloading $Uri"
    Invoke-WebRequest -Uri $Uri -OutFile $Path -UseBasicParsing
    $actual = (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash.ToLowerInvariant()
    if ($actual -ne $Checksum) {
        Remove-Item -LiteralPath $Path -Force
        throw "${What}: $Uri has SHA-256 $actual, expected $Checksum"
    }
}
