"""The shipped demo catalog is consistent and is what its generator produces."""

import subprocess
import sys

from sqlalchemy import select

from service.demo import EVENTS_FILE, ITEMS_FILE
from service.store.images import ImageStore
from service.store.importing import import_events, import_items
from service.store.models import Item
from service.settings import BUILTIN_EVENT_TYPES


def test_generator_verifies_the_shipped_files():
    out = subprocess.run([sys.executable, "-m", "service.demo.generate", "--verify"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_text_files_are_reproducible_from_the_generator(tmp_path):
    out = subprocess.run([sys.executable, "-m", "service.demo.generate", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # PNG bytes depend on the zlib build; the text files must match exactly.
    assert (tmp_path / "items.jsonl").read_bytes() == ITEMS_FILE.read_bytes()
    assert (tmp_path / "events.csv").read_bytes() == EVENTS_FILE.read_bytes()


def test_demo_imports_cleanly_on_both_databases(session_factory, settings):
    items = import_items(ITEMS_FILE, session_factory=session_factory, settings=settings, progress=False)
    assert items.rejected == 0 and items.inserted > 250
    with session_factory() as s:
        keys = [k for k in s.scalars(select(Item.image_location)) if k is not None]
    # Every demo image is in the store (the item rows hold their keys).
    assert len(keys) == 182 and all(ImageStore.from_settings(settings).exists(k) for k in keys)
    events = import_events(EVENTS_FILE, session_factory=session_factory, event_types=BUILTIN_EVENT_TYPES, progress=False)
    assert events.rejected == 0 and events.inserted == events.rows > 10_000
    again = import_items(ITEMS_FILE, session_factory=session_factory, settings=settings, progress=False)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, items.inserted)
