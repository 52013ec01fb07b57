"""The queue store's private modules, one per job, assembled into ``QueueStore`` by ``verification.store``.

- ``core``: engines, schema (migrations), the write transaction, shared filters and row views;
- ``enqueue``: nightly enqueue within capacities, closing stale items (``supersede``);
- ``remap``: labels and open items follow their node to a new taxonomy version;
- ``decisions``: leases (claim, renew, release) and the decision state machine;
- ``reads``: items, counts, labels and the decision log as tables (what the reports read);
- ``exchange``: CSV / Label Studio export and import of final decisions (file formats in
  ``verification.exchange``);
- ``users``: review-app users with bcrypt-hashed passwords.

Nothing outside ``verification`` imports these: use ``verification.store`` (or ``verification``).
"""
