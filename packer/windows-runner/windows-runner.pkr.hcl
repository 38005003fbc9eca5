# A single-use GitHub Actions runner template for rum.pool's Hyper-V VMs (rum.pool.hyperv_vm's template).
#
# Installs Windows Server 2022 from its ISO into a generation 2 VM with secure boot (Packer's
# hyperv-iso builder, run on a Hyper-V host), then: cloudbase-init, configured to read a NoCloud seed
# (NoCloudConfigDriveService) and started at every boot as a service; the actions runner unpacked
# into var.runner_dir and the local account var.runner_user, never configured (each VM gets a
# just-in-time config through its seed: rum.pool.runner_user_data_windows); with toolset = "full",
# a GitHub-like tool set. It ends with sysprep /generalize, so the VHDX in
# <output_directory>/Virtual Hard Disks/ is the template every VM's differencing disk starts from.
#
# Normally run through build.ps1 on the Hyper-V host, which makes a throw-away build password and
# the answer files. By hand:
#   packer build -var-file=my.pkrvars.hcl -var answer_dir=DIR -var build_password=PW .
#
# Works with Packer 1.6.6 (the builder is built in there) and later. There is deliberately no
# `packer { required_plugins { ... } }` block: Packer before 1.7 rejects it. With Packer 1.10 or later
# install the builder once with `packer plugins install github.com/hashicorp/hyperv` (build.ps1 does).

variable "iso_url" {
  type        = string
  description = "The Windows Server 2022 installation ISO (evaluation or volume licence), a URL or a local path."
}

variable "iso_checksum" {
  type        = string
  description = "Its checksum, sha256:<hex>."

  validation {
    condition     = substr(var.iso_checksum, 0, 7) == "sha256:" && length(var.iso_checksum) == 71
    error_message = "The iso_checksum must be sha256: followed by 64 hex digits."
  }
}

variable "windows_image" {
  type        = string
  description = "The image of the ISO's install.wim to install, by name (Core or Desktop Experience, Standard or Datacenter)."
  default     = "Windows Server 2022 SERVERSTANDARDCORE"
}

variable "toolset" {
  type        = string
  description = "minimal: the runner, git and PowerShell 7 (about 30 GB); full: a GitHub-like tool set (about 75 GB)."
  default     = "minimal"

  validation {
    condition     = contains(["minimal", "full"], var.toolset)
    error_message = "The toolset must be minimal or full."
  }
}

variable "toolset_packages" {
  type        = list(string)
  description = "Chocolatey packages for toolset = \"full\"; empty means the list in scripts/toolset.ps1."
  default     = []
}

variable "runner_version" {
  type        = string
  description = "The actions/runner release, without the v (e.g. 2.330.0)."

  validation {
    # Packer 1.6 has no regex(): check the shape with what it has (install-runner.ps1 checks again).
    condition     = length(split(".", var.runner_version)) == 3 && substr(var.runner_version, 0, 1) != "v"
    error_message = "The runner_version must look like 2.330.0 (no leading v)."
  }
}

variable "runner_sha256" {
  type        = string
  description = "SHA-256 of actions-runner-win-x64-<version>.zip, from the release notes."

  validation {
    condition     = length(var.runner_sha256) == 64 && lower(var.runner_sha256) == var.runner_sha256
    error_message = "The runner_sha256 must be 64 lowercase hex digits."
  }
}

variable "runner_download_url" {
  type        = string
  description = "Where to get the runner zip; empty means GitHub's release URL for runner_version."
  default     = ""
}

variable "runner_dir" {
  type        = string
  description = "Where the runner is unpacked (runner_user_data_windows' runner_dir)."
  default     = "C:\\actions-runner"
}

variable "runner_user" {
  type        = string
  description = "The local account the runner runs as (runner_user_data_windows' runner_user); an administrator."
  default     = "runner"
}

variable "cloudbase_init_url" {
  type        = string
  description = "The cloudbase-init MSI (x64). The stable link changes with each release; pin a release's MSI for repeatable builds."
  default     = "https://cloudbase.it/downloads/CloudbaseInitSetup_Stable_x64.msi"
}

variable "cloudbase_init_sha256" {
  type        = string
  description = "SHA-256 of that MSI."

  validation {
    condition     = length(var.cloudbase_init_sha256) == 64 && lower(var.cloudbase_init_sha256) == var.cloudbase_init_sha256
    error_message = "The cloudbase_init_sha256 must be 64 lowercase hex digits."
  }
}

variable "switch_name" {
  type        = string
  description = "The Hyper-V virtual switch the build VM uses (it needs the internet, and Packer must reach it)."
}

variable "disk_size" {
  type        = number
  description = "MB of the template's virtual disk; 0 means 30720 (minimal) or 76800 (full)."
  default     = 0
}

variable "cpus" {
  type    = number
  default = 4
}

variable "memory" {
  type        = number
  description = "MB of memory for the build VM."
  default     = 8192
}

variable "headless" {
  type        = bool
  description = "false opens a vmconnect window on the build VM's console."
  default     = true
}

variable "winrm_timeout" {
  type        = string
  description = "How long Windows setup may take until WinRM answers."
  default     = "2h"
}

variable "image_name" {
  type        = string
  description = "Name of the build VM and of the template VHDX (<image_name>.vhdx)."
  default     = "rum-windows-runner"
}

variable "output_directory" {
  type        = string
  description = "Where the exported VM (and the template VHDX under Virtual Hard Disks) goes; must not exist yet."
  default     = "output"
}

variable "answer_dir" {
  type        = string
  description = "The folder with Autounattend.xml and enable-winrm.ps1 that build.ps1 writes for this build."
}

variable "build_password" {
  type        = string
  description = "The Administrator password for this build only (build.ps1 makes a random one; the account is disabled at the end)."
  sensitive   = true
}

locals {
  runner_url = var.runner_download_url != "" ? var.runner_download_url : "https://github.com/actions/runner/releases/download/v${var.runner_version}/actions-runner-win-x64-${var.runner_version}.zip"
  disk_size  = var.disk_size > 0 ? var.disk_size : (var.toolset == "full" ? 76800 : 30720)
}

source "hyperv-iso" "windows" {
  iso_url      = var.iso_url
  iso_checksum = var.iso_checksum

  generation           = 2
  enable_secure_boot   = true
  secure_boot_template = "MicrosoftWindows"
  switch_name          = var.switch_name
  cpus                 = var.cpus
  memory               = var.memory
  disk_size            = local.disk_size
  headless             = var.headless
  guest_additions_mode = "disable"

  # Windows setup reads Autounattend.xml from any drive; a generation 2 VM has no floppy, so the
  # answer files come on a second DVD (Packer writes it with oscdimg, xorriso or mkisofs).
  cd_files = ["${var.answer_dir}/Autounattend.xml", "${var.answer_dir}/enable-winrm.ps1"]
  cd_label = "unattend"

  # A generation 2 VM asks to press a key to boot from the DVD.
  boot_wait    = "1s"
  boot_command = ["a<wait>a<wait>a<wait>a"]

  communicator   = "winrm"
  winrm_username = "Administrator"
  winrm_password = var.build_password
  winrm_use_ssl  = true
  winrm_insecure = true
  winrm_timeout  = var.winrm_timeout

  # finish.ps1 removes what only the build needed and runs sysprep, which shuts the VM down.
  shutdown_command = "powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\rum-build\\sysprep.ps1"
  shutdown_timeout = "1h"

  vm_name          = var.image_name
  output_directory = var.output_directory
}

build {
  sources = ["source.hyperv-iso.windows"]

  provisioner "powershell" {
    inline = ["New-Item -Path 'C:\\rum-build' -ItemType Directory -Force | Out-Null"]
  }

  provisioner "file" {
    source      = "${path.root}/cloudbase-init/"
    destination = "C:\\rum-build"
  }

  provisioner "file" {
    sources     = ["${path.root}/scripts/common.ps1", "${path.root}/scripts/sysprep.ps1", "${path.root}/scripts/finish.ps1"]
    destination = "C:\\rum-build\\"
  }

  provisioner "powershell" {
    environment_vars = [
      "RUNNER_VERSION=${var.runner_version}",
      "RUNNER_SHA256=${var.runner_sha256}",
      "RUNNER_URL=${local.runner_url}",
      "RUNNER_DIR=${var.runner_dir}",
      "RUNNER_USER=${var.runner_user}",
      "CLOUDBASE_INIT_URL=${var.cloudbase_init_url}",
      "CLOUDBASE_INIT_SHA256=${var.cloudbase_init_sha256}",
      "TOOLSET=${var.toolset}",
      "TOOLSET_PACKAGES=${join(" ", var.toolset_packages)}",
    ]
    scripts = [
      "${path.root}/scripts/base.ps1",
      "${path.root}/scripts/install-cloudbase-init.ps1",
      "${path.root}/scripts/install-runner.ps1",
      "${path.root}/scripts/toolset.ps1",
    ]
  }

  provisioner "windows-restart" {
    restart_timeout = "30m"
  }

  provisioner "powershell" {
    scripts = ["${path.root}/scripts/cleanup.ps1"]
  }
}
