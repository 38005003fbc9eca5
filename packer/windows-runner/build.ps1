# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Build the Windows runner template on a Hyper-V host: make a throw-away Administrator password and
# the answer files for this build, run `packer build` on this folder, and print the template's path,
# its SHA-256 and the hyperv_vm settings that use it.
#
#   .\build.ps1 -VarFile my.pkrvars.hcl [-Toolset full] [-WindowsImage 'Windows Server 2022 SERVERSTANDARD']
#   .\build.ps1 -Prepare C:\somewhere    only write the answer files there (for packer validate)
#
# The password reaches Packer through the environment (PKR_VAR_build_password), never a command line;
# the answer folder is deleted when the build ends, and the template's Administrator is disabled.
[CmdletBinding()]
param(
    [string]$VarFile = '',
    [ValidateSet('minimal', 'full')][string]$Toolset = 'minimal',
    [string]$WindowsImage = 'Windows Server 2022 SERVERSTANDARDCORE',
    [string]$ProductKey = '',
    [string]$ImageName = '',
    [string]$OutputDirectory = '',
    [string]$Prepare = '',
    [string]$Packer = 'packer'
)
$ErrorActionPreference = 'Stop'
$here = $PSScriptRoot

function New-BuildPassword {
    # Letters, digits and '-', so that it needs no escaping in XML; every character class Windows asks for.
    $random = [byte[]]::new(24)
    [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($random)
    $text = [Convert]::ToBase64String($random) -replace '[+/=]', ''
    return $text.Substring(0, 20) + 'Aa1-'
}

function Write-AnswerFile {
    param([string]$Folder, [string]$Password)
    if ($WindowsImage -notmatch '^[A-Za-z0-9 ._()-]+$') {
        throw "-WindowsImage '$WindowsImage': the image name in install.wim, e.g. Windows Server 2022 SERVERSTANDARDCORE"
    }
    $keyElement = ''
    if ($ProductKey) {
        if ($ProductKey -notmatch '^[A-Z0-9]{5}(-[A-Z0-9]{5}){4}$') {
            throw '-ProductKey: five groups of five letters or digits, like XXXXX-XXXXX-XXXXX-XXXXX-XXXXX'
        }
        $keyElement = "<ProductKey><Key>$ProductKey</Key><WillShowUI>OnError</WillShowUI></ProductKey>"
    }
    New-Item -Path $Folder -ItemType Directory -Force | Out-Null
    $template = [System.IO.File]::ReadAllText((Join-Path -Path $here -ChildPath 'answer\Autounattend.xml.in'))
    $answers = $template.Replace('@WINDOWS_IMAGE@', $WindowsImage).Replace('@PRODUCT_KEY@', $keyElement).Replace('@BUILD_PASSWORD@', $Password)
    [System.IO.File]::WriteAllText((Join-Path -Path $Folder -ChildPath 'Autounattend.xml'), $answers, [System.Text.UTF8Encoding]::new($false))
    Copy-Item -LiteralPath (Join-Path -Path $here -ChildPath 'answer\enable-winrm.ps1') -Destination $Folder -Force
}

if ($Prepare) {
    Write-AnswerFile -Folder $Prepare -Password (New-BuildPassword)
    Write-Host "answer files written to $Prepare"
    exit 0
}
if (-not $VarFile) {
    throw 'usage: .\build.ps1 -VarFile my.pkrvars.hcl [-Toolset minimal|full] (or -Prepare FOLDER)'
}
if ($null -eq (Get-Command -Name $Packer -ErrorAction SilentlyContinue)) {
    throw "packer is missing: https://developer.hashicorp.com/packer/install (1.6.6 or later)"
}
$isoTools = @('oscdimg.exe', 'xorriso.exe', 'mkisofs.exe')
if (-not ($isoTools | Where-Object { Get-Command -Name $_ -ErrorAction SilentlyContinue })) {
    throw 'Packer writes the answer DVD with oscdimg (Windows ADK, Deployment Tools), xorriso or mkisofs: put one on PATH'
}
$version = (& $Packer version | Select-Object -First 1) -replace '^Packer v?', ''
if ([version]($version -replace '[^0-9.].*$', '') -ge [version]'1.10') {
    if (-not ((& $Packer plugins installed) -match 'hashicorp/hyperv')) {
        Write-Host 'installing the Packer hyperv plugin'
        & $Packer plugins install github.com/hashicorp/hyperv
    }
}
if (-not $ImageName) {
    $ImageName = "rum-windows-runner-$Toolset-$([DateTime]::UtcNow.ToString('yyyyMMdd-HHmm'))"
}
if (-not $OutputDirectory) {
    $OutputDirectory = Join-Path -Path $here -ChildPath "output\$ImageName"
}
if (Test-Path -LiteralPath $OutputDirectory) {
    throw "$OutputDirectory exists already: remove it or pass -OutputDirectory"
}

$answerFolder = Join-Path -Path ([System.IO.Path]::GetTempPath()) -ChildPath "rum-windows-build-$([guid]::NewGuid().ToString('N'))"
try {
    $env:PKR_VAR_build_password = New-BuildPassword
    Write-AnswerFile -Folder $answerFolder -Password $env:PKR_VAR_build_password
    & $Packer build "-var-file=$VarFile" -var "toolset=$Toolset" -var "windows_image=$WindowsImage" -var "answer_dir=$answerFolder" -var "image_name=$ImageName" -var "output_directory=$OutputDirectory" $here
    if ($LASTEXITCODE -ne 0) {
        throw "packer build failed with exit code $LASTEXITCODE"
    }
}
finally {
    Remove-Item -LiteralPath 'Env:\PKR_VAR_build_password' -ErrorAction SilentlyContinue
    Remove-Item -LiteralPath $answerFolder -Recurse -Force -ErrorAction SilentlyContinue
}

$vhdx = Join-Path -Path $OutputDirectory -ChildPath "Virtual Hard Disks\$ImageName.vhdx"
if (-not (Test-Path -LiteralPath $vhdx -PathType Leaf)) {
    throw "packer finished but $vhdx is missing"
}
$digest = (Get-FileHash -LiteralPath $vhdx -Algorithm SHA256).Hash.ToLowerInvariant()
Write-Host ''
Write-Host "Built $vhdx"
Write-Host "sha256 $digest"
Write-Host ''
Write-Host 'Copy it to the template folder of every Hyper-V host, make it read-only, and use it:'
Write-Host "  Copy-Item '$vhdx' 'D:\rum\templates\$ImageName.vhdx'; Set-ItemProperty 'D:\rum\templates\$ImageName.vhdx' IsReadOnly `$true"
Write-Host "  rum.pool.hyperv_vm: template: D:\rum\templates\$ImageName.vhdx"
