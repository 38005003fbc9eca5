# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Tools for jobs, from Chocolatey. toolset minimal: git (actions/checkout uses it) and PowerShell 7
# (the default shell of Windows jobs). toolset full: a GitHub-like set on top (TOOLSET_PACKAGES
# replaces the list below). A package name that is not a plain name fails the build.
. 'C:\rum-build\common.ps1'

$packages = @('git', 'powershell-core')
if ("$env:TOOLSET" -eq 'full') {
    if ("$env:TOOLSET_PACKAGES".Trim()) {
        $packages += ("$env:TOOLSET_PACKAGES".Trim() -split '\s+')
    }
    else {
        $packages += @('7zip', 'nodejs-lts', 'python3', 'dotnet-sdk', 'golang', 'temurin17', 'cmake', 'ninja',
            'jq', 'gh', 'azure-cli', 'awscli', 'nuget.commandline', 'vswhere', 'visualstudio2022buildtools',
            'visualstudio2022-workload-vctools')
    }
}
elseif ("$env:TOOLSET" -ne 'minimal') {
    throw "toolset '$env:TOOLSET': minimal or full"
}
foreach ($package in $packages) {
    if ($package -notmatch '^[A-Za-z0-9][A-Za-z0-9._-]*$') {
        throw "'$package' is not a Chocolatey package name"
    }
}

$installer = Join-Path -Path $env:TEMP -ChildPath 'install-chocolatey.ps1'
Invoke-WebRequest -Uri 'https://community.chocolatey.org/install.ps1' -OutFile $installer -UseBasicParsing
& $installer
Remove-Item -LiteralPath $installer -Force
$choco = Join-Path -Path $env:ProgramData -ChildPath 'chocolatey\bin\choco.exe'
foreach ($package in $packages) {
    Write-Host "installing $package"
    & $choco install $package --yes --no-progress --limit-output
    if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 3010) {
        throw "choco install $package failed with exit code $LASTEXITCODE"
    }
}
& $choco cache remove --yes --limit-output | Out-Null
Write-Host "toolset $env:TOOLSET installed: $($packages -join ', ')"
