"""Pure analysis of inactive mailboxes: no I/O, no SQLite, no HTTP, no clock reads (callers pass ``now``).

Imports only the standard library, :mod:`imm.data.models`, the :mod:`imm.config` dataclasses and
:mod:`imm.errors`. Facts about Exchange follow ``docs/domain.md`` and ``docs/exo-rest.md``.

:mod:`imm.domain.parsing` reads Exchange's value formats: sizes (``"16.09 MB (16,873,043 bytes)"`` → bytes,
``"Unlimited"`` → None), dates (``2022-09-21T08:07:47.0000000+00:00``, ``…Z``, ``/Date(ms)/``; always UTC-aware),
TimeSpans as whole days, booleans, the GUID inside an InPlaceHolds value and MailboxLocations kinds. Unreadable
text raises :class:`~imm.errors.InputError`, so the same parsers check user input.

:mod:`imm.domain.records` builds the cached :class:`~imm.data.models.InactiveMailbox` from Get-Mailbox,
Get-MailboxStatistics (primary and archive) and Get-Recipient records, resolving Company/Department from the
recipient, a configured custom attribute or an HR mapping CSV (:func:`~imm.domain.records.load_org_mapping_csv`).

:mod:`imm.domain.holds` decodes every hold kind (litigation, eDiscovery ``UniH``, legacy In-Place, retention
policies ``mbx``/``skp`` with their ``:1``/``:2``/``:3`` action, org-wide policies and ``-mbx`` exclusions, label
and delay holds) into :class:`~imm.domain.holds.Hold` values with a plain-English description, resolved to policy
names and Preservation Lock when the compliance endpoint's :class:`~imm.domain.holds.PolicyInfo` is known, and
names them with the stable short names of ``hold_types`` / ``--hold-type``.

:mod:`imm.domain.eligibility` says what blocks a recover, a restore or a hold release
(:class:`~imm.domain.eligibility.Blocker`: code, message, alternative) and plans a release
(:func:`~imm.domain.eligibility.release_plan`: the cmdlets and parameters per hold as data, and whether it removes
the last hold).

:mod:`imm.domain.expiry` computes when every hold on a mailbox has run out (WhenSoftDeleted + duration, the
latest any item can still be held) and which holds never run out by themselves.

:mod:`imm.domain.cost` is the chargeback model: the former licence from MailboxPlan, a monthly licence rate plus a
rate per GB, rounded to cents, and summaries by company, department or licence with the savings of releasing the
mailboxes whose holds have run out.

:mod:`imm.domain.analyse` runs all of the above over one mailbox and fills its analysis fields (the sync calls
it for every mailbox).
"""
