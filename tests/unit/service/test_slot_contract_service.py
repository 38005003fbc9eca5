# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The slot contract's tests (tests/unit/plugins/module_utils/test_slot.py), run again against the
webhook service's copy (rum_pool_webhook.slot), the module the service imports at run time.

test_slot_copy.py checks that the two files are identical; this runs the copy's code, so that a
copy that could not be imported or behaved differently under the service's package is seen too.
"""

from __future__ import annotations

import importlib.util
import os

from rum_pool_webhook import slot as service_slot

_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugins",
                       "module_utils", "test_slot.py")
_SPEC = importlib.util.spec_from_file_location("test_slot_on_the_service_copy", _SOURCE)
_TESTS = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_TESTS)
_TESTS.slot = service_slot
_TESTS.SlotError = service_slot.SlotError

for _name, _value in vars(_TESTS).items():
    if _name.startswith("test_") and _name != "test_the_service_carries_an_identical_copy":
        globals()[_name] = _value


def test_the_copy_is_what_the_tests_run():
    assert _TESTS.slot is service_slot and service_slot.__name__ == "rum_pool_webhook.slot"
    assert _TESTS.slot.SlotError is not None
