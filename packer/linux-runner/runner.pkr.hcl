# A single-use GitHub Actions runner image for rum.pool (runner_pool_image).
#
# Takes an Ubuntu 24.04 or Debian 12 cloud image, boots it under qemu with a cloud-init seed
# that lets Packer log in with a throw-away key, installs the actions runner into var.runner_dir
# (owned by var.runner_user, not configured: every VM gets a just-in-time config at boot), removes
# everything that must be unique per guest, and writes a compacted qcow2 plus a SHA256SUMS file.
#
# Normally run through ./build.sh, which makes the throw-away key and the seed. By hand:
#   packer build -var-file=my.pkrvars.hcl -var seed_dir=DIR -var ssh_private_key_file=KEY .
#
# Works with Packer 1.6.6 (the builder is built in there) and later. There is deliberately no
# `packer { required_plugins { ... } }` block: Packer before 1.7 rejects it. With Packer 1.10 or
# later install the builder once with `packer plugins install github.com/hashicorp/qemu`
# (build.sh does this when it is missing).

variable "iso_url" {
  type        = string
  description = "The cloud image to start from (qcow2): Ubuntu 24.04 or Debian 12, a URL or a local path."
  default     = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"
}

variable "iso_checksum" {
  type        = string
  description = "Its checksum, e.g. sha256:<hex>, or file:<URL of a SHA256SUMS file>."
  default     = "file:https://cloud-images.ubuntu.com/noble/current/SHA256SUMS"
}

variable "runner_version" {
  type        = string
  description = "The actions/runner release, without the v (e.g. 2.330.0)."

  validation {
    # Packer 1.6 has no regex(): check the shape with what it has (install-runner.sh checks again).
    condition     = length(split(".", var.runner_version)) == 3 && substr(var.runner_version, 0, 1) != "v"
    error_message = "The runner_version must look like 2.330.0 (no leading v)."
  }
}

variable "runner_sha256" {
  type        = string
  description = "SHA-256 of actions-runner-linux-<arch>-<version>.tar.gz, from the release notes."

  validation {
    condition     = length(var.runner_sha256) == 64 && lower(var.runner_sha256) == var.runner_sha256
    error_message = "The runner_sha256 must be 64 lowercase hex digits."
  }
}

variable "runner_arch" {
  type        = string
  description = "Runner package architecture. Only x64 is built by this template (qemu-system-x86_64)."
  default     = "x64"

  validation {
    condition     = var.runner_arch == "x64"
    error_message = "Only runner_arch = \"x64\" is supported by this template."
  }
}

variable "runner_download_url" {
  type        = string
  description = "Where to get the runner tarball; empty means GitHub's release URL for runner_version."
  default     = ""
}

variable "runner_dir" {
  type        = string
  description = "Where the runner is unpacked (runner_pool_runner_dir)."
  default     = "/opt/actions-runner"
}

variable "runner_user" {
  type        = string
  description = "The user the runner runs as (runner_pool_runner_user)."
  default     = "runner"
}

variable "runner_sudo" {
  type        = bool
  description = "Give runner_user passwordless sudo (most setup actions and apt-get in jobs need it)."
  default     = true
}

variable "extras" {
  type        = list(string)
  description = "Optional recipes to run, by name: scripts/extras/<name>.sh (e.g. docker). An unknown name fails the build."
  default     = []
}

variable "extra_packages" {
  type        = list(string)
  description = "More apt packages to install (e.g. build-essential, python3-venv)."
  default     = []
}

variable "image_name" {
  type        = string
  description = "Base name of the output image (<image_name>.qcow2)."
  default     = "rum-runner"
}

variable "output_directory" {
  type        = string
  description = "Where the image and SHA256SUMS are written; must not exist yet."
  default     = "output"
}

variable "disk_size" {
  type        = string
  description = "Virtual size of the image's disk. VMs grow it further with runner_pool_vm.disk_size."
  default     = "10G"
}

variable "cpus" {
  type    = number
  default = 2
}

variable "memory" {
  type        = number
  description = "MiB of memory for the build VM."
  default     = 2048
}

variable "accelerator" {
  type        = string
  description = "kvm, or tcg on hosts whose KVM does not work (much slower)."
  default     = "kvm"
}

variable "headless" {
  type    = bool
  default = true
}

variable "ssh_timeout" {
  type        = string
  description = "How long the first boot may take until SSH answers."
  default     = "30m"
}

variable "seed_dir" {
  type        = string
  description = "Directory holding the build seed's user-data and meta-data (build.sh renders them from seed/)."
}

variable "ssh_username" {
  type        = string
  description = "The temporary build user the seed creates; removed again before the image is saved."
  default     = "packer"
}

variable "ssh_private_key_file" {
  type        = string
  description = "The throw-away private key whose public half is in the seed."
}

locals {
  runner_url = var.runner_download_url != "" ? var.runner_download_url : "https://github.com/actions/runner/releases/download/v${var.runner_version}/actions-runner-linux-${var.runner_arch}-${var.runner_version}.tar.gz"
}

source "qemu" "runner" {
  iso_url      = var.iso_url
  iso_checksum = var.iso_checksum
  disk_image   = true
  disk_size    = var.disk_size
  format       = "qcow2"

  # The seed is a NoCloud CD-ROM (volume label cidata). Packer attaches it with qemu's default
  # interface for the machine type: IDE on "pc", which the Debian cloud kernel can see (it has no
  # AHCI driver, so a SATA CD-ROM on q35 would be invisible and cloud-init would never add the key).
  cd_files     = ["${var.seed_dir}/user-data", "${var.seed_dir}/meta-data"]
  cd_label     = "cidata"
  machine_type = "pc"

  accelerator        = var.accelerator
  cpus               = var.cpus
  memory             = var.memory
  headless           = var.headless
  disk_interface     = "virtio"
  net_device         = "virtio-net"
  disk_discard       = "unmap"
  disk_detect_zeroes = "unmap"
  disk_compression   = true

  communicator         = "ssh"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = var.ssh_timeout

  # Remove the build user last (it is the one logged in), then power off.
  shutdown_command = "sudo sh -c 'rm -f /etc/sudoers.d/90-cloud-init-users; userdel --force --remove ${var.ssh_username}; rm -f /etc/ssh/ssh_host_*; sync; poweroff'"
  shutdown_timeout = "10m"

  output_directory = var.output_directory
  vm_name          = "${var.image_name}.qcow2"
}

build {
  sources = ["source.qemu.runner"]

  # The file provisioner needs an existing directory to upload a directory's contents into.
  provisioner "shell" {
    inline = ["mkdir -p -m 0700 /tmp/rum-extras"]
  }

  provisioner "file" {
    source      = "${path.root}/scripts/extras/"
    destination = "/tmp/rum-extras"
  }

  provisioner "shell" {
    execute_command = "sudo env {{ .Vars }} bash '{{ .Path }}'"
    environment_vars = [
      "RUNNER_VERSION=${var.runner_version}",
      "RUNNER_SHA256=${var.runner_sha256}",
      "RUNNER_URL=${local.runner_url}",
      "RUNNER_DIR=${var.runner_dir}",
      "RUNNER_USER=${var.runner_user}",
      "RUNNER_SUDO=${var.runner_sudo}",
      "EXTRAS=${join(" ", var.extras)}",
      "EXTRA_PACKAGES=${join(" ", var.extra_packages)}",
      "EXTRAS_DIR=/tmp/rum-extras",
      "BUILD_USER=${var.ssh_username}",
    ]
    scripts = [
      "${path.root}/scripts/base.sh",
      "${path.root}/scripts/install-runner.sh",
      "${path.root}/scripts/extras.sh",
      "${path.root}/scripts/cleanup.sh",
    ]
  }

  post-processor "checksum" {
    checksum_types = ["sha256"]
    output         = "${var.output_directory}/SHA256SUMS"
  }
}
