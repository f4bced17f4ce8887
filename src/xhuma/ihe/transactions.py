"""The registry of the IHE transactions this responding gateway serves: a transaction is served once it is listed
in ``TRANSACTIONS`` (how to add one: TRANSACTIONS.md beside this module).

Each transaction is one module holding its descriptor (``xhuma.ihe.descriptor.Transaction``: path, WS-Addressing
actions, request and response elements and schemas, ATNA event, error form), its handler and its messages. The
rest of the gateway reads the registry: the endpoints route by path (``BY_PATH``), the gateway dispatches to the
descriptor's handler, faults take an XDS transaction's codes from its descriptor, the audit trail counts and times
the registered ids (``IHE_TRANSACTION_IDS``) and treats their successes as disclosures, the ATNA exporter codes
their events and the console's audit search accepts their ids; none of them spells a transaction out.

The registry imports the transaction modules, so whatever reads it (``xhuma.audit``, ``xhuma.atna``, the console
API) loads them. It used to hold the descriptors only, importing nothing of the gateway, so that the audit trail
could be read without the IHE code. That bought little: every process that imports ``xhuma.audit`` loads the
transaction modules anyway, the application to serve them and the ``xhuma`` command for ``xhuma demo``. Measured
(CPU time of the import, best of five): ``import xhuma.app`` 1.00 s before, 1.05 s after (1,049 and 1,052 modules);
``import xhuma.cli``, what every ``xhuma`` command loads, 0.77 s and 0.80 s (869 and 921 modules: the handlers bring
the SAML verifier and signxml); only a bare ``import xhuma.audit`` grows, 0.19 s to 0.45 s (337 to 649 modules),
and no command or server imports it alone. One module per transaction is worth that.

``TRANSACTIONS`` can be extended at run time (``register``; ``registered`` for the length of a block, as the tests
do); the views below follow it, so a registered transaction is served, faulted, audited, counted and ATNA-coded
like the others (only the console's audit search reads the ids once, at import).
"""

from __future__ import annotations

from collections.abc import Iterator, KeysView, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Final

from xhuma.ihe import xca_query, xca_retrieve, xcpd
from xhuma.ihe.descriptor import AtnaEvent, ErrorForm, HandlerFactory, Transaction, TransactionHandler


class Registry:
    """The served transactions in order, with live read-only views by id and by path."""

    def __init__(self, *transactions: Transaction) -> None:
        self._by_id: dict[str, Transaction] = {}
        self._by_path: dict[str, Transaction] = {}
        self.by_id: Final[Mapping[str, Transaction]] = MappingProxyType(self._by_id)
        self.by_path: Final[Mapping[str, Transaction]] = MappingProxyType(self._by_path)
        self.ids: Final[KeysView[str]] = self._by_id.keys()
        for transaction in transactions:
            self.register(transaction)

    def register(self, transaction: Transaction) -> None:
        """Serve ``transaction``: its id, path and request action must be new to the registry."""
        for taken, what in ((transaction.id in self._by_id, "id"), (transaction.path in self._by_path, "path"),
                            (any(t.request_action == transaction.request_action for t in self), "request action")):
            if taken:
                raise ValueError(f"{transaction.id}: another registered transaction has its {what}")
        self._by_id[transaction.id] = transaction
        self._by_path[transaction.path] = transaction

    def unregister(self, transaction: Transaction) -> None:
        if self._by_id.get(transaction.id) is not transaction:
            raise ValueError(f"{transaction.id} is not registered")
        del self._by_id[transaction.id], self._by_path[transaction.path]

    @contextmanager
    def registered(self, *transactions: Transaction) -> Iterator[None]:
        """``transactions`` served for the length of the block."""
        done: list[Transaction] = []
        try:
            for transaction in transactions:
                self.register(transaction)
                done.append(transaction)
            yield
        finally:
            for transaction in reversed(done):
                self.unregister(transaction)

    def __iter__(self) -> Iterator[Transaction]:
        return iter(tuple(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)


# The registry: one line per transaction.
TRANSACTIONS: Final = Registry(
    xcpd.ITI_55,
    xca_query.ITI_38,
    xca_retrieve.ITI_39,
)

BY_ID: Final = TRANSACTIONS.by_id
BY_PATH: Final = TRANSACTIONS.by_path
IHE_TRANSACTION_IDS: Final = TRANSACTIONS.ids


__all__ = [
    "BY_ID",
    "BY_PATH",
    "IHE_TRANSACTION_IDS",
    "TRANSACTIONS",
    "AtnaEvent",
    "ErrorForm",
    "HandlerFactory",
    "Registry",
    "Transaction",
    "TransactionHandler",
]
