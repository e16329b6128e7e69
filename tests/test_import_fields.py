"""Who imports (``sync/import_fields.Importer``), as it travels to the parse pool."""

from __future__ import annotations

import pickle

from crmcal.sync.import_fields import Importer
from crmcal.sync.options import SyncOptions


def test_an_importer_is_pickled_the_same_before_and_after_its_memo_name_is_read() -> None:
    """The parse pool's feeder thread pickles the importer with each chunk while the
    event loop reads its memo name: reading it must not change what is pickled (a
    dict that grows while it is pickled fails the pickle, and the chunk with it)."""
    importer = Importer(7, "owner@crm.test", "Europe/Berlin", SyncOptions(), frozenset({"a@x"}))
    before = pickle.dumps(importer)
    assert importer.memo_name.startswith("import_fields:7:owner@crm.test:Europe/Berlin:")
    assert pickle.dumps(importer) == before
    assert pickle.loads(before).memo_name == importer.memo_name  # noqa: S301  # pickled here
