#!/usr/bin/env bash
# `make demo`: one VM from the locally built test image, through rum_vm's normal download path
# (a file:// URL with its checksum). `make demo-clean` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
export ANSIBLE_CONFIG=$PWD/ansible.cfg
state=${RUM_TEST_STATE:-/var/lib/rum-pool-test}
vars=.cache/demo/demo.vm.yml
mkdir -p .cache/demo

case "${1:-up}" in
  up)
    echo ">> test image (built from Debian packages on first use, then cached)"
    image_json=$(.venv/bin/python tests/tools/testimage.py)
    path=$(.venv/bin/python -c 'import json,sys; print(json.loads(sys.stdin.read())["path"])' <<<"$image_json")
    sha=$(.venv/bin/python -c 'import json,sys; print(json.loads(sys.stdin.read())["sha256"])' <<<"$image_json")
    cat > "$vars" <<EOV
vm:
  name: rum-demo
  domain_type: qemu
  vcpus: 2
  memory_mb: 768
  storage_dir: $state/demo
  image_cache_dir: $state/demo/images
  image:
    url: file://$path
    checksum: sha256:$sha
  labels:
    purpose: demo
  wait_for: cloud_init
  wait_timeout: 420
EOV
    echo ">> booting rum-demo under software emulation (about a minute)"
    .venv/bin/ansible-playbook playbooks/vm.yml -e @"$vars"
    cat <<EOT

rum-demo is up. Try:
  ansible -i tools/demo.rum.yml all -m ansible.builtin.shell -a 'hostname; cloud-init status'
  ansible localhost -m rum_vm_info
Remove it with:
  make demo-clean
EOT
    ;;
  down)
    if [[ ! -f $vars ]]; then echo "nothing to remove (no $vars)"; exit 0; fi
    .venv/bin/ansible-playbook playbooks/vm.yml -e @"$vars" -e vm_state=absent
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
