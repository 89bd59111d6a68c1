"""The wallet data layer on a migrated, real PostgreSQL database: constraints, rules, helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import AsyncAdaptedQueuePool

from exporter.demo.models import (
    Balance,
    BalanceError,
    EngineSettings,
    InsufficientFunds,
    InsufficientLockedFunds,
    InvalidAmount,
    LedgerEntry,
    Transfer,
    User,
    create_engine,
    health_check,
    is_connection_error,
    session_factory,
    session_scope,
    with_retry,
)
from exporter.dsn import sync_url

UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
D = Decimal

Factory = async_sessionmaker[AsyncSession]


@pytest.fixture
def engine(wallet_engine: AsyncEngine) -> AsyncEngine:
    return wallet_engine


@pytest.fixture
def factory(engine: AsyncEngine) -> Factory:
    return session_factory(engine)


async def add_user(factory: Factory, email: str = "a@example.com", **fields: object) -> int:
    async with session_scope(factory) as session:
        user = User(email=email, password_hash="x", **fields)
        session.add(user)
        await session.flush()
        return user.id


async def add_balance(factory: Factory, user_id: int, amount: str = "0", **fields: object) -> int:
    async with session_scope(factory) as session:
        balance = Balance(user_id=user_id, amount=D(amount), **fields)
        session.add(balance)
        await session.flush()
        return balance.id


async def add_deposit(factory: Factory, user_id: int, amount: str = "1") -> int:
    async with session_scope(factory) as session:
        deposit = Transfer(to_user_id=user_id, asset="USDT", amount=D(amount), kind="deposit")
        session.add(deposit)
        await session.flush()
        return deposit.id


async def delete_user(factory: Factory, user_id: int) -> None:
    """A plain DELETE: the database, not the ORM, decides what happens to related rows."""
    async with session_scope(factory) as session:
        await session.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})


async def insert(factory: Factory, *rows: object) -> None:
    """Add `rows` in one transaction."""
    async with session_scope(factory) as session:
        session.add_all(rows)


def assert_violates(
    error: pytest.ExceptionInfo[IntegrityError], constraint: str, sqlstate: str
) -> None:
    """The database refused the row because of `constraint`, and the error says so."""
    assert error.value.orig is not None
    assert getattr(error.value.orig, "sqlstate", None) == sqlstate
    assert f'constraint "{constraint}"' in str(error.value)


UNIQUE, FOREIGN_KEY, CHECK = "23505", "23503", "23514"


# --- constraints, enforced by the database -------------------------------------------------


async def test_email_is_unique(factory: Factory) -> None:
    await add_user(factory, "same@example.com")
    with pytest.raises(IntegrityError) as error:
        await add_user(factory, "same@example.com")
    assert_violates(error, "ix_users_email", UNIQUE)


async def test_tron_address_is_unique_but_optional(factory: Factory) -> None:
    address = "T" + "9" * 33
    await add_user(factory, "a@example.com", tron_address=address)
    await add_user(factory, "b@example.com")  # NULLs never collide
    await add_user(factory, "c@example.com")
    with pytest.raises(IntegrityError) as error:
        await add_user(factory, "d@example.com", tron_address=address)
    assert_violates(error, "uq_users_tron_address", UNIQUE)


async def test_one_balance_per_user_and_asset(factory: Factory) -> None:
    user_id = await add_user(factory)
    await add_balance(factory, user_id, asset="USDT")
    await add_balance(factory, user_id, asset="TRX")
    with pytest.raises(IntegrityError) as error:
        await add_balance(factory, user_id, asset="USDT")
    assert_violates(error, "uq_balances_user_id_asset", UNIQUE)


@pytest.mark.parametrize(
    ("amount", "locked", "constraint"),
    [
        ("-1", "0", "ck_balances_amount_non_negative"),
        ("1", "-1", "ck_balances_locked_non_negative"),
        ("1", "1.000001", "ck_balances_locked_within_amount"),
    ],
)
async def test_balance_checks(factory: Factory, amount: str, locked: str, constraint: str) -> None:
    user_id = await add_user(factory)
    with pytest.raises(IntegrityError) as error:
        await add_balance(factory, user_id, amount, locked_amount=D(locked))
    assert_violates(error, constraint, CHECK)


@pytest.mark.parametrize(
    ("kind", "amount", "parties", "constraint"),
    [
        ("deposit", "0", (None, "a"), "ck_transfers_amount_positive"),
        ("transfer", "-5", ("a", "b"), "ck_transfers_amount_positive"),
        ("refund", "1", ("a", "b"), "ck_transfers_kind_allowed"),
        ("deposit", "1", ("a", "b"), "ck_transfers_parties_match_kind"),
        ("withdrawal", "1", (None, "a"), "ck_transfers_parties_match_kind"),
        ("transfer", "1", ("a", None), "ck_transfers_parties_match_kind"),
        ("transfer", "1", ("a", "a"), "ck_transfers_parties_match_kind"),
    ],
)
async def test_transfer_checks(
    factory: Factory,
    kind: str,
    amount: str,
    parties: tuple[str | None, str | None],
    constraint: str,
) -> None:
    users = {"a": await add_user(factory, "a@example.com"), "b": await add_user(factory, "b@x")}
    sender, receiver = (users[p] if p else None for p in parties)
    transfer = Transfer(
        from_user_id=sender, to_user_id=receiver, asset="USDT", amount=D(amount), kind=kind
    )
    with pytest.raises(IntegrityError) as error:
        await insert(factory, transfer)
    assert_violates(error, constraint, CHECK)


async def test_ledger_entry_delta_is_not_zero(factory: Factory) -> None:
    user_id = await add_user(factory)
    deposit = Transfer(to_user_id=user_id, asset="USDT", amount=D(5), kind="deposit")
    deposit.entries.append(LedgerEntry(user_id=user_id, asset="USDT", delta=D(0)))
    with pytest.raises(IntegrityError) as error:
        await insert(factory, deposit)
    assert_violates(error, "ck_ledger_entries_delta_non_zero", CHECK)


MISSING = 987_654_321


@pytest.mark.parametrize(
    ("make_row", "constraint"),
    [
        (lambda user, transfer: Balance(user_id=MISSING), "fk_balances_user_id_users"),
        (
            lambda user, transfer: Transfer(
                from_user_id=MISSING, asset="USDT", amount=D(1), kind="withdrawal"
            ),
            "fk_transfers_from_user_id_users",
        ),
        (
            lambda user, transfer: Transfer(
                to_user_id=MISSING, asset="USDT", amount=D(1), kind="deposit"
            ),
            "fk_transfers_to_user_id_users",
        ),
        (
            lambda user, transfer: LedgerEntry(
                transfer_id=MISSING, user_id=user, asset="USDT", delta=D(1)
            ),
            "fk_ledger_entries_transfer_id_transfers",
        ),
        (
            lambda user, transfer: LedgerEntry(
                transfer_id=transfer, user_id=MISSING, asset="USDT", delta=D(1)
            ),
            "fk_ledger_entries_user_id_users",
        ),
    ],
)
async def test_foreign_keys(
    factory: Factory, make_row: Callable[[int, int], object], constraint: str
) -> None:
    user_id = await add_user(factory)
    transfer_id = await add_deposit(factory, user_id)
    row = make_row(user_id, transfer_id)
    with pytest.raises(IntegrityError) as error:
        await insert(factory, row)
    assert_violates(error, constraint, FOREIGN_KEY)


async def test_deleting_a_user_deletes_balances_but_not_ledger_history(factory: Factory) -> None:
    kept, gone = await add_user(factory, "kept@x"), await add_user(factory, "gone@x")
    await add_balance(factory, kept, "1")
    await add_balance(factory, gone, "2")
    await delete_user(factory, gone)
    async with factory() as session:
        owners = (await session.scalars(select(Balance.user_id))).all()
    assert owners == [kept]

    await add_deposit(factory, kept)
    with pytest.raises(IntegrityError) as error:
        await delete_user(factory, kept)
    assert_violates(error, "fk_transfers_to_user_id_users", FOREIGN_KEY)


# --- defaults ------------------------------------------------------------------------------


async def test_server_defaults(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        now = (await conn.execute(text("SELECT now()"))).scalar_one()
        user = (
            await conn.execute(
                text(
                    "INSERT INTO users (email, password_hash) VALUES ('raw@x', 'x') RETURNING"
                    " id, is_active, is_admin, is_verified, tron_address, created_at, updated_at"
                )
            )
        ).one()
        balance = (
            await conn.execute(
                text(
                    "INSERT INTO balances (user_id) VALUES (:id)"
                    " RETURNING asset, amount, locked_amount, created_at, updated_at"
                ),
                {"id": user.id},
            )
        ).one()
    assert (user.is_active, user.is_admin, user.is_verified, user.tron_address) == (
        True,
        False,
        False,
        None,
    )
    assert user.created_at == user.updated_at == now  # now(): the transaction's start
    assert now.utcoffset() is not None
    assert tuple(balance) == ("USDT", D("0.000000"), D("0.000000"), now, now)


async def test_orm_defaults_and_timestamps(factory: Factory) -> None:
    async with session_scope(factory) as session:
        user = User(email="orm@x", password_hash="x")
        balance = Balance(user=user)
        # Column defaults are there before any INSERT.
        assert (balance.asset, balance.amount, balance.locked_amount) == ("USDT", D(0), D(0))
        session.add(balance)
        await session.flush()
        # Server defaults come back with the INSERT (no lazy load in an async session).
        assert (user.is_active, user.is_admin, user.is_verified) == (True, False, False)
        created = balance.created_at
        assert isinstance(created, datetime)
        assert created.utcoffset() is not None  # timestamptz: timezone-aware
        assert balance.updated_at == created

    async with session_scope(factory) as session:
        stored = await session.get_one(Balance, balance.id)
        stored.amount = D("7.5")
        await session.flush()
        assert stored.created_at == created
        assert stored.updated_at > created  # onupdate=now(), read back by the UPDATE


# --- balance rules (pure Python) -------------------------------------------------------------


def test_available_amount() -> None:
    balance = Balance(amount=D("10.5"), locked_amount=D("2.25"))
    assert balance.available_amount == D("8.25")
    assert Balance().available_amount == D(0)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("8.25", True),
        ("0.000001", True),
        ("8.250001", False),
        ("0", False),
        ("-1", False),
        ("0.0000001", False),  # more places than NUMERIC(18, 6) keeps
        ("NaN", False),
        ("Infinity", False),
    ],
)
def test_can_withdraw(amount: str, expected: bool) -> None:
    balance = Balance(amount=D("10.5"), locked_amount=D("2.25"))
    assert balance.can_withdraw(D(amount)) is expected


def test_lock_and_unlock() -> None:
    balance = Balance(amount=D("10"), locked_amount=D("0"))
    balance.lock(D("3.5"))
    assert (balance.locked_amount, balance.available_amount) == (D("3.5"), D("6.5"))
    balance.lock(D("6.5"))  # everything that is available
    assert (balance.locked_amount, balance.available_amount) == (D("10"), D("0"))
    balance.unlock(D("10"))
    assert (balance.locked_amount, balance.available_amount) == (D("0"), D("10"))


@pytest.mark.parametrize("method", ["lock", "unlock"])
@pytest.mark.parametrize("amount", ["0", "-1", "0.0000001", "NaN", "Infinity", "1E+12"])
def test_lock_and_unlock_refuse_invalid_amounts(method: str, amount: str) -> None:
    balance = Balance(amount=D("10"), locked_amount=D("5"))
    with pytest.raises(InvalidAmount, match="amount must be a positive Decimal"):
        getattr(balance, method)(D(amount))
    assert (balance.amount, balance.locked_amount) == (D("10"), D("5"))


def test_lock_more_than_available() -> None:
    balance = Balance(amount=D("10"), locked_amount=D("4"), asset="TRX")
    with pytest.raises(InsufficientFunds, match=r"^cannot lock 6\.000001 TRX: only 6 available$"):
        balance.lock(D("6.000001"))
    assert balance.locked_amount == D("4")


def test_unlock_more_than_locked() -> None:
    balance = Balance(amount=D("10"), locked_amount=D("4"))
    with pytest.raises(InsufficientLockedFunds, match=r"^cannot unlock 5 USDT: only 4 locked$"):
        balance.unlock(D("5"))
    assert balance.locked_amount == D("4")


def test_balance_errors_are_value_errors() -> None:
    for error in (InvalidAmount, InsufficientFunds, InsufficientLockedFunds):
        assert issubclass(error, BalanceError)
        assert issubclass(error, ValueError)


async def test_lock_is_persisted(factory: Factory) -> None:
    balance_id = await add_balance(factory, await add_user(factory), "100")

    async with session_scope(factory) as session:
        query = select(Balance).where(Balance.id == balance_id).with_for_update()
        balance = (await session.scalars(query)).one()
        balance.lock(D("40.123456"))

    async with factory() as session:
        stored = await session.get_one(Balance, balance_id)
        assert (stored.amount, stored.locked_amount) == (D("100.000000"), D("40.123456"))
        assert stored.available_amount == D("59.876544")
        assert stored.can_withdraw(D("59.876544")) is True
        assert stored.can_withdraw(D("59.876545")) is False


# --- session_scope -----------------------------------------------------------------------


async def count_users(factory: Factory) -> int:
    async with factory() as session:
        return (await session.execute(select(func.count()).select_from(User))).scalar_one()


async def test_session_scope_commits(factory: Factory) -> None:
    async with session_scope(factory) as session:
        session.add(User(email="kept@x", password_hash="x"))
    async with factory() as other:
        emails = (await other.scalars(select(User.email))).all()
    assert emails == ["kept@x"]


class Boom(Exception):
    pass


async def add_user_then_fail(factory: Factory) -> None:
    async with session_scope(factory) as session:
        session.add(User(email="lost@x", password_hash="x"))
        await session.flush()  # the row reached the database, inside the transaction
        raise Boom


async def test_session_scope_rolls_back_and_reraises(factory: Factory) -> None:
    with pytest.raises(Boom):
        await add_user_then_fail(factory)
    assert await count_users(factory) == 0


async def test_session_scope_reraises_a_failed_commit(factory: Factory) -> None:
    await add_user(factory, "taken@x")
    new, taken = User(email="new@x", password_hash="x"), User(email="taken@x", password_hash="x")
    with pytest.raises(IntegrityError):
        await insert(factory, new, taken)
    assert await count_users(factory) == 1


# --- engine helpers ----------------------------------------------------------------------


async def test_create_engine_applies_settings(migrated_database: URL) -> None:
    settings = EngineSettings(pool_size=3, max_overflow=4, pool_timeout=1.5, pool_recycle=60)
    engine = create_engine(migrated_database.render_as_string(hide_password=False), settings)
    try:
        pool = engine.pool
        assert isinstance(pool, AsyncAdaptedQueuePool)
        assert (pool.size(), pool.timeout()) == (3, 1.5)
        # No public accessors for these.
        assert (pool._max_overflow, pool._recycle, pool._pre_ping) == (4, 60, True)
        assert engine.echo is False
        assert await health_check(engine) is True
    finally:
        await engine.dispose()


async def test_create_engine_passes_connect_args_to_the_driver(migrated_database: URL) -> None:
    engine = create_engine(
        migrated_database,
        connect_args={"server_settings": {"application_name": "wallet-test"}},
    )
    try:
        async with engine.connect() as conn:
            name = await conn.scalar(text("SELECT current_setting('application_name')"))
            seen = await conn.scalar(
                text("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            )
        assert (name, seen) == ("wallet-test", "wallet-test")
    finally:
        await engine.dispose()
    # Without connect_args the driver's default stays.
    plain = create_engine(migrated_database)
    try:
        async with plain.connect() as conn:
            name = await conn.scalar(text("SELECT current_setting('application_name')"))
        assert name != "wallet-test"
    finally:
        await plain.dispose()


def test_engine_settings_defaults() -> None:
    assert EngineSettings() == EngineSettings(
        pool_size=5,
        max_overflow=10,
        pool_timeout=30.0,
        pool_recycle=1800,
        pool_pre_ping=True,
        echo=False,
    )
    with pytest.raises(AttributeError):
        EngineSettings().pool_size = 1  # type: ignore[misc]


async def test_health_check(engine: AsyncEngine) -> None:
    assert await health_check(engine) is True
    unreachable = create_engine(UNREACHABLE)
    try:
        assert await health_check(unreachable) is False
    finally:
        await unreachable.dispose()


# --- with_retry --------------------------------------------------------------------------


async def test_with_retry_retries_connection_errors(engine: AsyncEngine) -> None:
    unreachable = create_engine(UNREACHABLE)
    calls = 0

    async def select_one() -> int:
        nonlocal calls
        calls += 1
        target = unreachable if calls <= 2 else engine  # down twice, then back
        async with target.connect() as conn:
            value: int = (await conn.execute(text("SELECT 1"))).scalar_one()
            return value

    try:
        assert await with_retry(select_one, base_delay=0) == 1
    finally:
        await unreachable.dispose()
    assert calls == 3


async def test_with_retry_gives_up_after_the_attempts() -> None:
    unreachable = create_engine(UNREACHABLE)
    calls = 0

    async def select_one() -> None:
        nonlocal calls
        calls += 1
        async with unreachable.connect() as conn:
            await conn.execute(text("SELECT 1"))

    try:
        with pytest.raises(ConnectionRefusedError):
            await with_retry(select_one, attempts=3, base_delay=0)
    finally:
        await unreachable.dispose()
    assert calls == 3


async def test_with_retry_does_not_retry_integrity_errors(factory: Factory) -> None:
    await add_user(factory, "taken@x")
    calls = 0

    async def add_duplicate() -> int:
        nonlocal calls
        calls += 1
        return await add_user(factory, "taken@x")

    with pytest.raises(IntegrityError):
        await with_retry(add_duplicate, base_delay=0)
    assert calls == 1


async def test_with_retry_recovers_from_a_terminated_connection(engine: AsyncEngine) -> None:
    pids: list[int] = []

    async def work() -> int:
        async with engine.connect() as conn:
            pid: int = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            pids.append(pid)
            if len(pids) == 1:  # the server ends this session, as on a failover
                await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            return pid

    assert await with_retry(work, base_delay=0) == pids[1]
    assert len(pids) == 2
    assert pids[0] != pids[1]


async def test_with_retry_backs_off_exponentially(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []

    async def no_sleep(delay: float) -> None:
        delays.append(delay)

    async def refused() -> None:
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    with pytest.raises(ConnectionRefusedError):
        await with_retry(refused, attempts=5, base_delay=0.1, max_delay=0.25)
    assert delays == [0.1, 0.2, 0.25, 0.25]


async def test_with_retry_needs_one_attempt() -> None:
    async def never() -> None:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="attempts must be at least 1, got 0"):
        await with_retry(never, attempts=0)


async def test_a_statement_timeout_is_not_a_connection_error(engine: AsyncEngine) -> None:
    # asyncpg: a plain DBAPIError on a connection that is still fine.
    async with engine.connect() as conn:
        await conn.execute(text("SET statement_timeout = 1"))
        with pytest.raises(DBAPIError) as error:
            await conn.execute(text("SELECT pg_sleep(1)"))
    assert getattr(error.value.orig, "sqlstate", None) == "57014"
    assert error.value.connection_invalidated is False
    assert is_connection_error(error.value) is False


def test_a_psycopg_statement_timeout_is_not_a_connection_error(migrated_database: URL) -> None:
    # psycopg: query_canceled is an OperationalError, but its SQLSTATE is not a connection's.
    engine = create_sync_engine(sync_url(migrated_database))
    try:
        with engine.connect() as conn:
            conn.execute(text("SET statement_timeout = 1"))
            with pytest.raises(OperationalError) as error:
                conn.execute(text("SELECT pg_sleep(1)"))
    finally:
        engine.dispose()
    assert getattr(error.value.orig, "sqlstate", None) == "57014"
    assert is_connection_error(error.value) is False


def test_socket_errors_are_connection_errors() -> None:
    assert is_connection_error(ConnectionResetError()) is True
    assert is_connection_error(OSError()) is True
    assert is_connection_error(TimeoutError()) is True
    assert is_connection_error(ValueError()) is False


async def test_with_retry_passes_other_errors_through() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await with_retry(broken, base_delay=0)
    assert calls == 1
