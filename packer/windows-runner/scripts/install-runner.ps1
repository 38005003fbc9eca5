# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The GitHub Actions runner, unpacked into RUNNER_DIR and never configured: each VM gets a
# just-in-time config through its seed. RUNNER_USER is the account it runs as: an administrator
# (as on GitHub's hosted Windows runners) whose random password is forgotten at once, because the
# pool starts the runner through a scheduled task with an S4U logon, which needs none.
. 'C:\rum-build\common.ps1'

$version = "$env:RUNNER_VERSION"
$expected = "$env:RUNNER_SHA256"
$dir = "$env:RUNNER_DIR"
$user = "$env:RUNNER_USER"
if ($version -notmatch '^[0-9]+\.[0-9]+\.[0-9]+$') {
    throw "runner_version '$version': expected e.g. 2.330.0"
}
if ($user -notmatch '^[A-Za-z0-9_][A-Za-z0-9._-]{0,19}$') {
    throw "runner_user '$user': a local account name of 1 to 20 letters, digits and '._-'"
}

$zip = Join-Path -Path $env:TEMP -ChildPath "actions-runner-win-x64-$version.zip"
Save-CheckedDownload -Uri $env:RUNNER_URL -Path $zip -Checksum $expected -What 'the actions runner zip'
New-Item -Path $dir -ItemType Directory -Force | Out-Null
Expand-Archive -LiteralPath $zip -DestinationPath $dir -Force
Remove-Item -LiteralPath $zip -Force
if (-not (Test-Path -LiteralPath (Join-Path -Path $dir -ChildPath 'run.cmd') -PathType Leaf)) {
    throw "no run.cmd in $dir after unpacking the runner"
}

if ($null -eq (Get-LocalUser -Name $user -ErrorAction SilentlyContinue)) {
    $random = [byte[]]::new(24)
    [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($random)
    $password = ConvertTo-SecureString -String ([Convert]::ToBase64String($random) + 'aA1!') -AsPlainText -Force
    New-LocalUser -Name $user -Password $password -PasswordNeverExpires -AccountNeverExpires -Description 'GitHub Actions runner (rum.pool)' | Out-Null
    Add-LocalGroupMember -SID 'S-1-5-32-544' -Member $user
}
$acl = Get-Acl -LiteralPath $dir
$acl.AddAccessRule([System.Security.AccessControl.FileSystemAccessRule]::new($user, 'Modify', 'ContainerInherit, ObjectInherit', 'None', 'Allow'))
Set-Acl -LiteralPath $dir -AclObject $acl

$stamp = "runner_version=$version`r`nrunner_dir=$dir`r`nrunner_user=$user`r`nbuilt=$([DateTime]::UtcNow.ToString('s'))Z"
Set-Content -LiteralPath 'C:\ProgramData\rum-runner-image.txt' -Value $stamp -Encoding ASCII
Write-Host "actions runner $version unpacked into $dir for $user (not configured)"
