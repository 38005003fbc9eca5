#!/usr/bin/python
# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rum_vm
short_description: A libvirt VM from a cloud image, with its overlay, cloud-init seed and lifecycle
version_added: 0.1.0
author: rum.pool developers (@rum-pool)
description:
  - Creates, converges, starts, stops and removes a libvirt virtual machine built from a cloud image.
  - The image is downloaded once into a content-addressed cache and verified against O(image.checksum);
    the VM gets its own qcow2 overlay on top of it (never a full copy), a cloud-init NoCloud seed ISO
    and a domain definition generated from these options.
  - Re-running with the same options reports no change. When options change, the domain is redefined
    in place, keeping its UUID and MAC addresses; O(apply_changes) decides what happens to a running VM.
  - Everything the module creates is marked as rum.pool's own in the domain's C(<metadata>); a domain of
    the same name that lacks that mark is never touched.
  - This is the Ansible form of the C(rum) tool - C(rum up) is O(state=running), C(rum down)
    O(state=stopped), C(rum destroy) O(state=absent), C(rum up --reset) O(reset=true), and
    C(rum ssh-config) the RV(vm.ssh_config) return value.
extends_documentation_fragment:
  - rum.pool.attributes
  - rum.pool.attributes.actiongroup_libvirt
  - rum.pool.libvirt
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff lists, before and after, only what changes - the power state and each field of the domain
        definition that differs (memory, vCPUs, disks, interfaces, mounts, labels, ...) - one line per field.
  idempotent:
    support: full
    details: Except O(state=restarted) and O(reset=true), which act on every run.
options:
  name:
    description:
      - Name of the domain, also the default hostname.
      - 1 to 63 characters from C(A-Z a-z 0-9 . _ -), starting with a letter or digit.
    type: str
    required: true
  state:
    description:
      - V(running) defines the VM and starts it (C(rum up)).
      - V(present) defines it without starting it; a running VM is left running.
      - V(stopped) shuts it down with ACPI, forcing it off after O(shutdown_timeout) seconds (C(rum down)).
      - V(restarted) shuts it down and starts it again, or starts it when it was off.
      - V(absent) removes the domain, its NVRAM, overlay, seed, drives, keys and logs (C(rum destroy)).
        The image cache is kept. The VM's network filter (O(network_filter)) goes with it, also when the domain
        was deleted by hand before and left the filter, unless another domain names it.
      - For a domain deleted by hand, V(absent) with the same O(interfaces) also drops the DHCP reservations
        of its MACs (O(interfaces[].mac), else the MAC derived from the name) that no domain's NIC has, and
        removes the isolated networks it made (O(interfaces[].isolated)) that no domain uses any more.
    type: str
    choices: [running, present, stopped, restarted, absent]
    default: running
  domain_type:
    description:
      - V(kvm) for hardware virtualisation, V(qemu) for software emulation (TCG).
      - V(auto) picks V(kvm) only when C(/dev/kvm) is usable and backed by C(kvm_intel) or C(kvm_amd);
        other KVM implementations (for example nested C(kvm_pvm)) are known to hang ordinary guests.
    type: str
    choices: [auto, kvm, qemu]
    default: auto
  machine:
    description: Machine type (V(q35), V(pc) or a versioned name).
    type: str
    default: q35
  arch:
    description: Guest architecture.
    type: str
    default: x86_64
  firmware:
    description: V(bios) or V(uefi) (UEFI uses libvirt's firmware auto-selection and a per-VM NVRAM file).
    type: str
    choices: [bios, uefi]
    default: bios
  vcpus:
    description: Number of virtual CPUs.
    type: int
    default: 2
  memory_mb:
    description: Memory in MiB, at least 256.
    type: int
    default: 1024
  image:
    description:
      - The base cloud image. Required to create the VM; without it an existing VM's definition is left
        as it is and only its power state is acted on (for example O(state=stopped)).
    type: dict
    suboptions:
      url:
        description: An C(http://), C(https://) or C(file://) URL, or a local path, of a qcow2 or raw image.
        type: str
        required: true
      checksum:
        description:
          - V(sha256:<hex>) (also V(sha512:) or V(sha1:)), or V(sha256:<URL>) of a checksum file (C(SHA256SUMS))
            in which the image's file name is looked up.
          - Without it the image is cached by URL and not verified (a warning says so).
        type: str
  disk_size:
    description:
      - Virtual size of the VM's disk, with a K, M, G or T suffix (binary units). The disk is a qcow2
        overlay whose size is the larger of this and the image's own size. It is grown, never shrunk.
    type: str
  drives:
    description: Extra blank qcow2 drives, attached as C(vdb), C(vdc), ... in the order of their names.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the drive (also its filesystem label).
        type: str
        required: true
      size:
        description: Size with a K, M, G or T suffix.
        type: str
        required: true
      filesystem:
        description: Format the drive with this filesystem on first boot (cloud-init C(fs_setup)).
        type: str
      mount:
        description: Mount it here in the guest (with C(nofail)); needs O(drives[].filesystem).
        type: str
  filesystems:
    description:
      - File systems over several of O(drives) (C(rum.toml)'s C([[fs.btrfs]]) and C([[fs.zfs]])), made on the
        first boot before O(provision_script) runs and mounted with C(nofail). A drive that already holds
        anything is never formatted; a failure fails cloud-init (see O(wait_for)).
      - The guest needs C(mkfs.btrfs) (C(btrfs-progs)) or C(zpool) (C(zfsutils-linux)); when missing, the
        guest installs it with its package manager, which needs a package mirror.
    type: list
    elements: dict
    default: []
    suboptions:
      type:
        description: V(btrfs) (one file system over the drives) or V(zfs) (a pool).
        type: str
        required: true
        choices: [btrfs, zfs]
      drives:
        description: Names from O(drives), each used once and without its own O(drives[].filesystem).
        type: list
        elements: str
        required: true
      mount:
        description: Where it is mounted in the guest (for zfs, the pool's mountpoint).
        type: str
        required: true
      mode:
        description:
          - For btrfs the data profile (C(mkfs.btrfs -d)) - V(single), V(dup), V(raid0), V(raid1), V(raid1c3),
            V(raid1c4), V(raid10), V(raid5) or V(raid6); for zfs the vdev type - V(mirror), V(raidz),
            V(raidz1), V(raidz2) or V(raidz3). Without it, btrfs and zfs choose (zfs stripes).
        type: str
      pool:
        description: The zfs pool's name; defaults to the first drive's name. Only for V(zfs).
        type: str
  interfaces:
    description:
      - Network interfaces, in order. Each needs exactly one of O(interfaces[].network),
        O(interfaces[].bridge) or O(interfaces[].user).
      - Defaults to one interface on the libvirt network V(default); an empty list gives the VM none.
      - A user-mode interface that is not the first one only carries O(ports) - the guest gives it qemu's
        address C(10.0.2.15/24) without a route, so its default route stays on the first interface.
      - MAC addresses are derived from the VM's name, and kept across redefinitions.
    type: list
    elements: dict
    suboptions:
      network:
        description:
          - A libvirt network. It must exist (an inactive one is started), unless O(interfaces[].isolated) is
            set.
        type: str
      bridge:
        description: A host bridge.
        type: str
      user:
        description: User-mode networking (no root networking needed; reach the guest through O(ports)).
        type: bool
      mac:
        description: A fixed MAC address.
        type: str
      model:
        description: NIC model.
        type: str
        default: virtio
      ip:
        description:
          - A fixed IPv4 address for this interface, as a DHCP reservation for its MAC on O(interfaces[].network)
            (the address must be in the network's subnet and not reserved for another MAC). The reservation
            is dropped when the VM is removed.
        type: str
      isolated:
        description:
          - Create O(interfaces[].network) when it does not exist, as an isolated network - no forwarding,
            the host at C(.1) of a /24 taken from O(interfaces[].ip) (or picked free from C(192.168.2-254.0)
            from the network's name), DHCP from C(.100) to C(.254), started and autostarted.
          - A network made this way is removed with the last VM that uses it (O(state=absent), or a run that
            takes the VM's interface on it away while the VM is shut off - a running guest keeps its NICs
            until it restarts). A network that already exists is used as it is and never removed.
        type: bool
        default: false
  ports:
    description: Host ports forwarded to guest ports; needs a user-mode interface.
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: Host port.
        type: int
        required: true
      guest:
        description: Guest port.
        type: int
        required: true
      bind:
        description: Host address to listen on.
        type: str
        default: 127.0.0.1
  mounts:
    description:
      - Host directories shared with the guest and mounted there by cloud-init (C(nofail), so a share that
        fails does not stop the guest's boot).
      - With O(wait_for=cloud_init) the module then checks over SSH that each one is mounted, reports it in
        RV(vm.mounts), and fails naming the shares that are not.
    type: list
    elements: dict
    default: []
    suboptions:
      source:
        description:
          - Existing host directory. V(.) is O(project_dir), V(git) the top of the git work tree O(project_dir)
            is in, and a relative path is relative to O(project_dir).
        type: path
        required: true
      target:
        description: Absolute path in the guest. Targets must not repeat or nest.
        type: str
        required: true
      readonly:
        description:
          - Share read-only. libvirt cannot make a V(virtiofs) share read-only, so this needs
            O(mounts[].driver=9p).
        type: bool
        default: false
      tag:
        description: Mount tag; defaults to the target with C(/) replaced by C(_).
        type: str
      driver:
        description:
          - V(virtiofs) needs C(virtiofsd) on the host (Debian 12 has it in C(qemu-system-common), later
            releases in the C(virtiofsd) package; the module refuses a V(virtiofs) share on a local libvirt
            without it) and virtiofs in the guest kernel, which Debian's and Ubuntu's cloud kernels have.
          - V(9p) needs 9p in the guest kernel, which Debian's cloud kernels (C(linux-image-cloud-amd64))
            lack; generic kernels have it.
        type: str
        choices: [virtiofs, 9p]
        default: virtiofs
      default:
        description:
          - The working-directory mount - login shells in the guest start in its target. At most one.
        type: bool
        default: false
  project_dir:
    description:
      - The folder O(mounts[].source) V(.), V(git) and relative paths are resolved against, on the host the
        module runs on (C(rum.pool.rum_toml) sets it to the C(rum.toml)'s folder).
    type: path
  hostname:
    description: Guest hostname; defaults to O(name).
    type: str
  user:
    description: The login user cloud-init creates (passwordless sudo, password locked, SSH keys only).
    type: str
    default: rum
  user_groups:
    description: Extra groups for O(user).
    type: list
    elements: str
    default: []
  ssh_authorized_keys:
    description: Public keys allowed to log in as O(user).
    type: list
    elements: str
    default: []
  generate_ssh_key:
    description:
      - Generate a per-VM ed25519 key pair in the VM's directory (private key mode 0600) and authorise it,
        so that O(wait_for=cloud_init) and the C(rum.pool.rum) inventory plugin can log in.
    type: bool
    default: true
  ssh_interface:
    description:
      - The libvirt network (one of O(interfaces[].network)) whose interface's address SSH uses - for
        O(wait_for), RV(vm.ssh), RV(vm.ssh_command) and the inventory plugin. By default the first
        interface's (or a user-mode forward of port 22).
    type: str
  ssh_client:
    description:
      - The SSH client command RV(vm.ssh_command) starts with (C(rum.toml)'s C(ssh.command)), for example
        C(kitty +kitten ssh). The module's own checks always use C(ssh).
    type: str
    default: ssh
  provision_script:
    description:
      - Shell script run once, on the first boot of this instance (a C(#!) line picks the interpreter, else
        C(/bin/sh)), after O(filesystems) are made.
      - Its output and exit status are kept in the guest, the newest 10 runs; M(rum.pool.rum_vm_info) reads them
        back with its O(rum.pool.rum_vm_info#module:script_logs) option (C(rum log)).
    type: str
  boot_script:
    description:
      - Shell script run on every boot; on the first boot after O(provision_script). Its runs are kept like
        O(provision_script)'s.
    type: str
  autologin:
    description: Log O(user) in automatically on the serial console.
    type: bool
    default: false
  packages:
    description: Packages cloud-init installs on first boot.
    type: list
    elements: str
    default: []
  user_data:
    description:
      - A dict is merged on top of the cloud-config this module generates (your keys win; lists such as
        C(runcmd) are appended).
      - A string is used verbatim as the whole user-data; then O(user), O(ssh_authorized_keys) and the
        generated key are not applied by the module.
    type: raw
  network_config:
    description: cloud-init network-config (v2) as a dict or string; defaults to DHCP on every NIC, matched by MAC.
    type: raw
  vendor_data:
    description: cloud-init vendor-data.
    type: raw
  meta_data:
    description: Extra cloud-init meta-data keys.
    type: dict
  instance_id:
    description:
      - cloud-init instance id. By default it is derived from the seed's content, so a change of the
        seed makes cloud-init provision the VM again on its next boot, and an unchanged seed does not.
    type: str
  seed_bus:
    description:
      - Bus of the seed CD-ROM. V(virtio-scsi) works with cloud kernels (Debian's cloud kernel cannot see a
        SATA CD-ROM); V(ide) needs O(machine=pc).
    type: str
    choices: [virtio-scsi, sata, ide]
    default: virtio-scsi
  seed_eject:
    description:
      - Take the seed out of the VM once the guest has read it, and delete the seed ISO from the host, so that
        what the seed carries (for a runner, its JIT config) does not stay readable for the VM's whole life.
      - The guest says it has read the seed by opening the CD-ROM's tray; the module adds a script that does
        this to the cloud-config it generates, run first in C(runcmd), at the end of cloud-init. With a string
        O(user_data) the guest has to open the tray itself (C(eject /dev/sr0) or the C(CDROMEJECT) ioctl).
      - The module does not wait for it. After starting the VM it hands the VM to a watcher process for
        O(storage_dir) (one per directory, started when needed, gone when it has nothing to watch), which
        removes the medium from the running and the persistent definition within about a second of the tray
        opening, under the VM's lock. The watcher forgets the VM when it is removed, made again, shut off,
        or after an hour; each module run on a running VM also ejects a seed whose tray is open.
      - The CD-ROM drive stays, empty. A VM whose seed was ejected keeps it ejected on later runs; O(reset=true)
        gives it a new seed.
    type: bool
    default: false
  network_filter:
    description:
      - Default-deny networking for the guest, with O(network_filter.engine=nwfilter) a libvirt network filter
        C(rum-vm-<name>) on each of its interfaces on a libvirt network or host bridge, with
        O(network_filter.engine=nftables) the host's nftables ruleset on each of its interfaces on a libvirt
        network. Not for user-mode interfaces. Omitted, the guest's network is not filtered.
      - "Allowed: DHCP, and DNS to the libvirt network's own addresses; SSH into the guest from those
        addresses (the host side); connections to O(network_filter.allow); TCP to O(network_filter.public_ports)
        on public addresses. Everything else is refused: the host's own addresses, every other VM on the
        guest's networks, the private (10/8, 172.16/12, 192.168/16), shared (100.64/10), loopback,
        link-local (169.254/16, with the cloud metadata address), multicast and reserved ranges, and IPv6."
      - Frames from the guest with a MAC address other than its own, and ARP packets naming another sender MAC
        address, are dropped.
      - "Engine nwfilter: the filter is made or updated before the domain is defined and removed with the VM. A
        change of this option reaches a running guest at once, without a restart. Given without O(image), only the
        filter (and the power state) of an existing VM changes, so C(name), C(network_filter) (and C(uri),
        C(storage_dir)) are enough to switch a VM's filter on or off. libvirt applies the rules with iptables on
        bridged traffic, which needs the kernel's C(br_netfilter) with C(net.bridge.bridge-nf-call-iptables=1)
        (its default once loaded; libvirt loads it); the module fails when that sysctl is 0."
      - Engine nftables, see O(network_filter.engine). Either way, run the module on the hypervisor (it reads
        the host's addresses).
    type: dict
    suboptions:
      enabled:
        description: V(false) removes the filter (the same as leaving O(network_filter) out).
        type: bool
        default: true
      engine:
        description:
          - Who holds the rules. V(nwfilter) is the libvirt network filter C(rum-vm-<name>) described above.
          - V(nftables) is the same policy in two nftables tables the whole host shares (C(bridge rum_isolation)
            and C(inet rum_isolation), rewritten atomically), with the guest's NICs named C(rum) and 12 hex
            digits. A start adds two set elements in one nft transaction instead of the dozens of firewall
            commands libvirt runs to instantiate a filter, so starting and destroying a guest is several
            times faster. The NICs are defined with their link down and raised only once the ruleset holds
            them, so a guest started outside rum.pool (C(virsh start), autostart after a reboot) has no
            network until a rum_vm run with O(state=running) holds it. Needs the C(nft) command (Debian
            package C(nftables)) and NICs on libvirt networks (not host bridges), does not need
            C(br_netfilter); the policy is part of the definition, so a change of it reaches the guest at its
            next boot (see O(apply_changes)).
        type: str
        choices: [nwfilter, nftables]
        default: nwfilter
      allow:
        description:
          - Holes for services the guest needs that the rules above refuse, such as an internal registry, a
            GitHub Enterprise Server on a private address, or a port on the host.
        type: list
        elements: dict
        default: []
        suboptions:
          address:
            description:
              - An IPv4 address, a network (V(10.20.0.0/16)), or a host name, resolved on the hypervisor when the
                module runs (all its IPv4 addresses).
            type: str
            required: true
          ports:
            description: Destination ports (V(5000)) or ranges (V(8000-8100)); empty for every port.
            type: list
            elements: raw
            default: []
          protocol:
            description: V(tcp), V(udp), or V(any) (both, or every IP protocol when O(network_filter.allow[].ports) is empty).
            type: str
            choices: [tcp, udp, any]
            default: tcp
      deny:
        description:
          - Destinations refused even when O(network_filter.allow) or O(network_filter.public_ports) would let them
            through (a deny entry wins). Same keys as O(network_filter.allow).
        type: list
        elements: dict
        default: []
        suboptions:
          address:
            description: An IPv4 address, a network or a host name (see O(network_filter.allow[].address)).
            type: str
            required: true
          ports:
            description: Destination ports or ranges; empty for every port.
            type: list
            elements: raw
            default: []
          protocol:
            description: V(tcp), V(udp) or V(any).
            type: str
            choices: [tcp, udp, any]
            default: tcp
      public_ports:
        description: TCP ports the guest may reach on any public address (V(443) for GitHub and most registries).
        type: list
        elements: raw
        default: [443]
  kernel:
    description: Boot this kernel directly instead of the disk's boot loader.
    type: path
  initrd:
    description: Initial ramdisk for O(kernel).
    type: path
  kernel_args:
    description: Kernel command line for O(kernel).
    type: str
  reset:
    description: Throw away the overlay, seed and NVRAM and start from a fresh first boot (C(rum up --reset)).
    type: bool
    default: false
  apply_changes:
    description:
      - What to do when the definition of a running VM changed.
      - V(next_boot) redefines it and lets the change apply at the next boot (with a warning);
        V(restart) shuts it down and starts it again; V(fail) fails.
    type: str
    choices: [next_boot, restart, fail]
    default: next_boot
  wait_for:
    description:
      - After starting, wait until the guest has an IP address (V(ip)), answers on SSH (V(ssh)), or has
        finished cloud-init (V(cloud_init), checked over SSH with the generated key); with V(cloud_init) the
        O(mounts) are checked too.
      - On time-out the module fails with the last lines of the serial console.
    type: str
    choices: [none, ip, ssh, cloud_init]
    default: none
  wait_timeout:
    description: Seconds to wait for O(wait_for).
    type: int
    default: 300
  shutdown_timeout:
    description: Seconds to wait for an ACPI shutdown before forcing the VM off.
    type: int
    default: 60
  storage_dir:
    description:
      - Where the VM's directory (overlay, seed, NVRAM, key, serial log) is made.
      - Defaults to C(/var/lib/libvirt/images/rum) for C(qemu:///system) and C(~/.local/share/rum) otherwise.
      - With C(qemu:///system) qemu runs as another user, so every directory above it must be traversable;
        the module checks and names the directory that is not.
    type: path
  image_cache_dir:
    description: The image cache; defaults to C(images) beside the default O(storage_dir).
    type: path
  autostart:
    description: Start the VM when libvirtd starts.
    type: bool
    default: false
  labels:
    description: Free-form key/value labels kept in the domain's metadata (the inventory plugin turns them into groups).
    type: dict
    default: {}
  origin:
    description:
      - What this VM was made from, kept in its metadata (C(rum.pool.rum_toml) sets the C(rum.toml)'s path).
        When a VM of this O(name) exists with another origin, the module fails instead of taking it over or
        removing it - two projects that each have a C(dev.rum.toml) cannot share the VM C(dev).
    type: str
requirements:
  - libvirt-python
  - pycdlib
  - qemu-img
  - ssh-keygen (for O(generate_ssh_key))
seealso:
  - module: rum.pool.rum_vm_info
  - module: rum.pool.rum_seed_iso
  - module: rum.pool.rum_image
"""

EXAMPLES = r"""
- name: A Debian VM from the official cloud image, ready for SSH
  rum.pool.rum_vm:
    name: dev
    image:
      url: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2
      checksum: sha512:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS
    vcpus: 2
    memory_mb: 2048
    disk_size: 20G
    ssh_authorized_keys:
      - "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
    wait_for: cloud_init
  register: dev

- name: Show how to log in
  ansible.builtin.debug:
    msg: "{{ dev.vm.ssh_command }}"

- name: More memory; restart it if it is running
  rum.pool.rum_vm:
    name: dev
    image:
      url: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2
    memory_mb: 4096
    apply_changes: restart

- name: A throw-away VM with user-mode networking and SSH on localhost:2222 (software emulation)
  rum.pool.rum_vm:
    name: scratch
    domain_type: qemu
    image:
      url: file:///srv/images/debian-12.qcow2
      checksum: sha256:5d0ee8a2f4b1b4a8a3a1c7c8f1d07b9b7b5f8f8e4c2a1c9c0f4a5e6b7c8d9e0f1
    interfaces:
      - user: true
    ports:
      - host: 2222
        guest: 22
    mounts:
      - source: /srv/src
        target: /src

- name: Stop it (ACPI, forced after a minute)
  rum.pool.rum_vm:
    name: dev
    state: stopped

- name: Remove it with its disks and seed
  rum.pool.rum_vm:
    name: dev
    state: absent
"""

RETURN = r"""
changes:
  description: What the module did (or would do in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["create overlay disk", "write seed ISO", "define domain", "start"]
vm:
  description: The VM after the run.
  returned: always
  type: dict
  contains:
    name:
      description: Domain name.
      type: str
      returned: always
      sample: dev
    uuid:
      description: Domain UUID (kept across redefinitions).
      type: str
      returned: when the VM exists
    state:
      description: Power state as libvirt reports it (V(running), V(shutoff), ...), or V(absent).
      type: str
      returned: always
      sample: running
    domain_type:
      description: The domain type in use (V(kvm) or V(qemu)).
      type: str
      returned: when the VM exists
    mac:
      description: MAC address of the first interface.
      type: str
      returned: when the VM exists
      sample: "52:54:00:3a:1c:9e"
    macs:
      description: MAC addresses of all interfaces.
      type: list
      elements: str
      returned: when the VM exists
    ip:
      description: IPv4 address of the first interface, from the DHCP lease, the guest agent or ARP.
      type: str
      returned: when the VM runs and the address is known
      sample: 192.168.122.57
    ip_source:
      description: Where the address came from (V(lease), V(agent) or V(arp)).
      type: str
      returned: when RV(vm.ip) is set
    ssh:
      description: How to reach the guest over SSH.
      type: dict
      returned: when the VM exists
      contains:
        host:
          description: Address to connect to (the guest's IP, or the forwarding address with user-mode networking).
          type: str
        port:
          description: Port to connect to.
          type: int
        user:
          description: Login user.
          type: str
        identity_file:
          description: The generated private key, if any.
          type: str
    ssh_command:
      description: A ready-to-run ssh command line (without a remote command).
      type: str
      returned: when the address is known
    ssh_config:
      description: An OpenSSH C(Host) block for C(~/.ssh/config) (C(rum ssh-config)).
      type: str
      returned: when the VM exists
    instance_id:
      description: The cloud-init instance id in the seed.
      type: str
      returned: when the VM exists
    cloud_init:
      description: cloud-init's final status when O(wait_for=cloud_init).
      type: str
      returned: when O(wait_for=cloud_init)
    labels:
      description: The labels kept in the domain's metadata.
      type: dict
      returned: when the VM exists
    mounts:
      description: The shared folders, each as seen in the guest.
      type: list
      elements: dict
      returned: when O(wait_for=cloud_init) and O(mounts) are given
      contains:
        target:
          description: Where it is mounted in the guest.
          type: str
        tag:
          description: Its mount tag.
          type: str
        driver:
          description: V(virtiofs) or V(9p).
          type: str
        mounted:
          description: Whether the guest has it mounted (always V(true) when the module succeeds).
          type: bool
    image:
      description: The cached base image.
      type: dict
      returned: when the VM exists
      contains:
        path:
          description: Path of the cached image.
          type: str
        digest:
          description: Its content digest.
          type: str
    paths:
      description: Files that belong to the VM.
      type: dict
      returned: when the VM exists
      contains:
        dir:
          description: The VM's directory.
          type: str
        overlay:
          description: The qcow2 overlay disk.
          type: str
        seed:
          description: The cloud-init seed ISO (mode 0600).
          type: str
        serial_log:
          description: The serial console log (C(rum log)).
          type: str
        identity_file:
          description: The generated SSH private key.
          type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.rum.pool.plugins.module_utils import _libvirt as lv
from ansible_collections.rum.pool.plugins.module_utils import _vm as vm
from ansible_collections.rum.pool.plugins.module_utils._seed import HAS_PYCDLIB, PYCDLIB_IMPORT_ERROR
from ansible_collections.rum.pool.plugins.module_utils._vm_options import argument_spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
    )
    if not lv.HAS_LIBVIRT:
        module.fail_json(msg=missing_required_lib("libvirt-python"), exception=str(lv.LIBVIRT_IMPORT_ERROR))
    if not HAS_PYCDLIB:
        module.fail_json(msg=missing_required_lib("pycdlib"), exception=str(PYCDLIB_IMPORT_ERROR))

    changes: list = []
    try:
        manager = vm.VMManager(vm.VMParams.from_dict(module.params), check_mode=module.check_mode,
                               log=module.log, warn=module.warn, changes=changes)
        result = manager.run()
    except (vm.VMError, lv.LibvirtError) as exc:
        module.fail_json(msg=str(exc), changes=changes)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
