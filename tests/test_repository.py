"""`BaseRepository` on a migrated, real PostgreSQL database: lookups, filters, both
paginations and their edges, writes, soft delete, and eager loading without N+1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from wallet_helpers import statements

from exporter.demo.models import (
    MAX_PAGE_SIZE,
    BalanceRepository,
    LedgerEntry,
    TransactionManager,
    TransferRepository,
    User,
    UserRepository,
)

D = Decimal


@pytest.fixture
async def session(transactions: TransactionManager) -> AsyncIterator[AsyncSession]:
    """One transaction for the whole test, rolled back at the end."""
    async with transactions.begin() as session:
        yield session
        await session.rollback()


async def add_users(session: AsyncSession, count: int, **fields: object) -> list[User]:
    return await UserRepository(session).create_many(
        {"email": f"u{i:03}@x", "password_hash": "x", **fields} for i in range(count)
    )


# --- lookups and filters ---------------------------------------------------------------------


async def test_get_list_count_exists_with_filters_and_ordering(session: AsyncSession) -> None:
    users = UserRepository(session)
    created = await add_users(session, 5)
    await users.update(created[1], is_active=False)
    await users.update(created[3], is_active=False)

    assert await users.get(created[2].id) is created[2]
    assert await users.get(10**12) is None
    inactive = await users.list(is_active=False)
    assert [u.email for u in inactive] == ["u001@x", "u003@x"]
    newest_first = await users.list(User.email.like("u00%"), order_by=[User.email.desc()])
    assert [u.email for u in newest_first] == ["u004@x", "u003@x", "u002@x", "u001@x", "u000@x"]
    assert [u.email for u in await users.list(order_by=[User.email], limit=2)] == [
        "u000@x",
        "u001@x",
    ]
    assert await users.count() == 5
    assert await users.count(User.email > "u002@x", is_active=True) == 1
    assert await users.exists(email="u004@x") is True
    assert await users.exists(email="nobody@x") is False


async def test_a_filter_on_a_column_the_model_lacks_is_refused(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match=r"^User has no column 'mail'$"):
        await UserRepository(session).list(mail="u000@x")


# --- keyset pagination -----------------------------------------------------------------------


async def test_keyset_pages_walk_every_row_once_in_order(session: AsyncSession) -> None:
    users = UserRepository(session)
    created = await add_users(session, 7)
    # Ties in the ordering column: the primary key breaks them, no row is skipped or repeated.
    for user in created[2:5]:
        await users.update(user, email=f"same-{user.id}@x", is_active=False)
    seen: list[int] = []
    after = None
    sizes = []
    while True:
        page = await users.page_after(User.is_active, after=after, size=3)
        seen += [u.id for u in page.items]
        sizes.append(len(page.items))
        if page.next_key is None:
            break
        after = page.next_key
    expected = sorted(created, key=lambda u: (u.is_active, u.id))
    assert seen == [u.id for u in expected]
    assert sizes == [3, 3, 1]


async def test_keyset_edges_empty_exact_multiple_single_row_and_descending(
    session: AsyncSession,
) -> None:
    users = UserRepository(session)
    empty = await users.page_after(User.id, size=5)
    assert (list(empty.items), empty.next_key) == ([], None)

    created = await add_users(session, 4)
    ids = [u.id for u in created]
    first = await users.page_after(User.id, size=2)
    second = await users.page_after(User.id, after=first.next_key, size=2)
    # An exact multiple: the second page is full and is the last (no empty third page).
    assert [u.id for u in second.items] == ids[2:]
    assert second.next_key is None

    down = await users.page_after(User.id, size=3, descending=True)
    assert [u.id for u in down.items] == ids[::-1][:3]
    rest = await users.page_after(User.id, after=down.next_key, size=3, descending=True)
    assert ([u.id for u in rest.items], rest.next_key) == ([ids[0]], None)

    one = await users.page_after(User.id, size=1, email=created[1].email)
    assert ([u.id for u in one.items], one.next_key) == ([ids[1]], None)


@pytest.mark.parametrize("size", [0, -1, MAX_PAGE_SIZE + 1])
async def test_page_sizes_out_of_range_are_refused(session: AsyncSession, size: int) -> None:
    users = UserRepository(session)
    message = rf"^page size must be from 1 to {MAX_PAGE_SIZE}, got {size}$"
    with pytest.raises(ValueError, match=message):
        await users.page_after(User.id, size=size)
    with pytest.raises(ValueError, match=message):
        await users.page(size=size)


# --- offset pagination -------------------------------------------------------------------------


async def test_offset_pages_with_total_and_past_the_end(session: AsyncSession) -> None:
    users = UserRepository(session)
    created = await add_users(session, 5)
    page = await users.page(number=2, size=2, order_by=[User.email])
    assert [u.email for u in page.items] == ["u002@x", "u003@x"]
    assert (page.number, page.size, page.total, page.pages) == (2, 2, 5, 3)
    last = await users.page(number=3, size=2, order_by=[User.email])
    assert [u.id for u in last.items] == [created[4].id]
    beyond = await users.page(number=4, size=2)
    assert (list(beyond.items), beyond.total) == ([], 5)
    with pytest.raises(ValueError, match=r"^page number must be at least 1, got 0$"):
        await users.page(number=0)


# --- writes ------------------------------------------------------------------------------------


async def test_create_many_is_one_insert_and_sets_generated_values(
    wallet_engine: AsyncEngine, session: AsyncSession
) -> None:
    with statements(wallet_engine) as sent:
        users = await add_users(session, 30)
    assert [s.split()[0] for s in sent] == ["INSERT"]
    assert all(u.id is not None and u.created_at is not None for u in users)
    assert len({u.id for u in users}) == 30


async def test_update_refuses_an_unknown_column_and_sets_nothing(session: AsyncSession) -> None:
    users = UserRepository(session)
    (user,) = await add_users(session, 1)
    with pytest.raises(ValueError, match=r"^User has no column 'nickname'$"):
        await users.update(user, email="changed@x", nickname="x")
    assert user.email == "u000@x"
    await users.update(user, email="changed@x")
    assert await users.exists(email="changed@x")


async def test_a_constraint_error_surfaces_at_the_call(transactions: TransactionManager) -> None:
    async with transactions.begin() as session:
        await UserRepository(session).create(email="taken@x", password_hash="x")
    with pytest.raises(IntegrityError, match="ix_users_email"):
        async with transactions.begin() as session:
            await UserRepository(session).create(email="taken@x", password_hash="x")
    async with transactions.begin() as session:
        assert await UserRepository(session).count() == 1


async def test_delete_removes_the_row(session: AsyncSession) -> None:
    users = UserRepository(session)
    kept, gone = await add_users(session, 2)
    await users.delete(gone)
    assert [u.id for u in await users.list(with_deleted=True)] == [kept.id]


# --- soft delete -------------------------------------------------------------------------------


async def test_soft_delete_hides_the_row_from_every_lookup_until_restored(
    session: AsyncSession,
) -> None:
    users = UserRepository(session)
    kept, hidden = await add_users(session, 2)
    await users.soft_delete(hidden)
    now = (await session.execute(text("SELECT now()"))).scalar_one()
    assert hidden.deleted_at == now  # the database's clock
    assert hidden.is_deleted

    assert await users.get(hidden.id) is None
    assert [u.id for u in await users.list()] == [kept.id]
    assert await users.count() == 1
    assert await users.exists(id=hidden.id) is False
    assert [u.id for u in (await users.page()).items] == [kept.id]
    assert [u.id for u in (await users.page_after(User.id)).items] == [kept.id]
    # The row is still there, for whoever asks for it.
    assert await users.get(hidden.id, with_deleted=True) is hidden
    assert await users.count(with_deleted=True) == 2
    assert (await session.execute(text("SELECT count(*) FROM users"))).scalar_one() == 2

    await users.restore(hidden)
    assert not hidden.is_deleted
    assert await users.get(hidden.id) is hidden
    assert await users.count() == 2


async def test_soft_delete_on_a_model_without_deleted_at_is_refused(
    session: AsyncSession,
) -> None:
    (user,) = await add_users(session, 1)
    balance = await BalanceRepository(session).create(user_id=user.id, amount=D(5))
    with pytest.raises(TypeError, match=r"^Balance has no deleted_at column"):
        await BalanceRepository(session).soft_delete(balance)
    assert await BalanceRepository(session).get(balance.id) is balance


# --- eager loading -----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [3, 40])
async def test_lookups_returning_relations_cost_the_same_statements_for_any_row_count(
    wallet_engine: AsyncEngine, session: AsyncSession, count: int
) -> None:
    users = await add_users(session, count)
    await BalanceRepository(session).create_many(
        {"user_id": u.id, "asset": asset, "amount": D(1)} for u in users for asset in ("A", "B")
    )
    session.expunge_all()  # lookups must load from the database, not the identity map
    repository = UserRepository(session)
    with statements(wallet_engine) as sent:
        listed = await repository.list()
        page = await repository.page(size=count)
        keyset = await repository.page_after(User.id, size=count)
        one = await repository.get(users[0].id)
    # One SELECT for the users and one for their balances per lookup (+ the page's count).
    assert len(sent) == 2 + 3 + 2 + 2
    # Loaded: reading the relation needs no IO (an async session would refuse a lazy load).
    assert one is not None
    for found in (listed, page.items, keyset.items, [one]):
        assert {len(u.balances) for u in found} == {2}


async def test_transfers_come_with_their_ledger_entries(
    wallet_engine: AsyncEngine, session: AsyncSession
) -> None:
    a, b = await add_users(session, 2)
    transfers = TransferRepository(session)
    for amount in (D(1), D(2), D(3)):
        transfer = await transfers.create(
            from_user_id=a.id, to_user_id=b.id, asset="USDT", amount=amount, kind="transfer"
        )
        session.add_all(
            LedgerEntry(transfer_id=transfer.id, user_id=user, asset="USDT", delta=delta)
            for user, delta in ((a.id, -amount), (b.id, amount))
        )
    await session.flush()
    session.expunge_all()
    with statements(wallet_engine) as sent:
        latest = await transfers.of_user(b.id, limit=2)
    assert len(sent) == 2
    assert [t.amount for t in latest] == [D(3), D(2)]
    assert [sorted(e.delta for e in t.entries) for t in latest] == [[-3, 3], [-2, 2]]
