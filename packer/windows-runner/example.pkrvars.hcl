# Copy to my.pkrvars.hcl, fill in, and run on the Hyper-V host: .\build.ps1 -VarFile my.pkrvars.hcl
# (-Toolset full for the GitHub-like tool set).
#
# The runner release and the SHA-256 of actions-runner-win-x64-<version>.zip are on
# https://github.com/actions/runner/releases. Use the newest release and rebuild at least every few
# weeks: GitHub stops sending jobs to a runner 30 days after a newer release is out, and JIT runners
# never update themselves.
runner_version = "REPLACE-with-e.g.-2.330.0"
runner_sha256  = "REPLACE-with-the-64-hex-sha256-of-the-win-x64-zip"

# A Windows Server 2022 ISO (the evaluation ISO from Microsoft's Evaluation Center works) and its SHA-256
# (Get-FileHash -Algorithm SHA256 <iso>).
iso_url      = "D:/iso/windows-server-2022.iso"
iso_checksum = "sha256:REPLACE-with-the-64-hex-sha256-of-the-iso"

# cloudbase-init's MSI and its SHA-256. Pin a release's MSI from
# https://github.com/cloudbase/cloudbase-init/releases for repeatable builds.
cloudbase_init_url    = "https://cloudbase.it/downloads/CloudbaseInitSetup_Stable_x64.msi"
cloudbase_init_sha256 = "REPLACE-with-the-64-hex-sha256-of-the-msi"

# A virtual switch with internet access that this machine can reach the build VM through.
switch_name = "rum-build"
