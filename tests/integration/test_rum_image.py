# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rum_image and rum_image_info through ansible-playbook, on small generated qcow2 images."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from tests import needs

from ansible_collections.rum.pool.plugins.module_utils._checksum import file_digest


@pytest.fixture
def images(state_dir):
    """Two small qcow2 images and a SHA256SUMS file under a scratch dir qemu can read."""
    work = os.path.join(state_dir, f"rum-image-{uuid.uuid4().hex[:8]}")
    os.makedirs(work, mode=0o755)
    os.chmod(work, 0o755)
    paths = {}
    for name, size in (("base", "16M"), ("other", "8M")):
        path = os.path.join(work, f"{name}.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, size], check=True)
        paths[name] = path
    with open(os.path.join(work, "SHA256SUMS"), "w") as fh:
        fh.write(f"{file_digest(paths['base'])}  base.qcow2\n")
    yield {
        "work_dir": work,
        "cache_dir": os.path.join(work, "cache"),
        "image_url": "file://" + paths["base"],
        "image_sha256": file_digest(paths["base"]),
        "other_url": "file://" + paths["other"],
        "other_sha256": file_digest(paths["other"]),
        "sums_url": "file://" + os.path.join(work, "SHA256SUMS"),
    }
    shutil.rmtree(work, ignore_errors=True)


def test_rum_image_lifecycle(playbook, images):
    run = playbook("rum_image/main.yml", images)
    assert "failed=0" in run.stdout
    assert "ignored=3" in run.stdout, "the three expected failures ran"
    assert not os.path.exists(images["cache_dir"])


def test_rum_image_prune_keeps_images_in_use(playbook, images):
    needs.command("virsh", "libvirt-clients")
    name = f"rum-image-test-{uuid.uuid4().hex[:8]}"
    run = playbook("rum_image/in_use.yml", {**images, "domain_name": name})
    assert "failed=0" in run.stdout
    listed = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                            capture_output=True, text=True, check=False).stdout.split()
    assert name not in listed
