"""`BaseRepository[Model]`: typed async CRUD, filters, pagination and soft delete on one session.

    class UserRepository(BaseRepository[User]):
        model = User
        eager = (User.balances,)          # loaded with every lookup: no N+1, no lazy IO

    async with transactions.begin() as session:
        users = UserRepository(session)
        page = await users.page_after(User.created_at, size=50, is_active=True)

Filters are SQLAlchemy expressions (`User.email.like("%@x")`) and/or `column=value` keywords.
Every lookup (get, list, both paginations) loads the relations named in `eager` with
`selectinload`: one more query per relation, whatever the number of rows. Models with a
`deleted_at` column (`SoftDeleteMixin`) get `soft_delete`/`restore`, and their deleted rows are
left out of every lookup and count unless `with_deleted=True`.

The model's primary key must be one column. Writes flush (so that constraint errors surface at
the call and generated values are set) but never commit: the transaction is the caller's
(`models.transactions.TransactionManager`).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, exists, func, inspect, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, QueryableAttribute, selectinload

from .base import Base, SoftDeleteMixin

ModelT = TypeVar("ModelT", bound=Base)

# The most rows one page may hold: a page is held in memory whole.
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Page(Generic[ModelT]):
    """One page of an offset pagination (`number` counts from 1) and the total row count."""

    items: Sequence[ModelT]
    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return -(-self.total // self.size)


@dataclass(frozen=True, slots=True)
class KeysetPage(Generic[ModelT]):
    """One page of a keyset pagination. `next_key` is the `after` of the next page (the last
    row's ordering value and primary key); None on the last page."""

    items: Sequence[ModelT]
    next_key: tuple[Any, Any] | None


def _page_size(size: int) -> int:
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"page size must be from 1 to {MAX_PAGE_SIZE}, got {size}")
    return size


class BaseRepository(Generic[ModelT]):
    """Lookups and writes of one model on one session; subclasses set `model` (and `eager`)."""

    model: type[ModelT]
    eager: tuple[QueryableAttribute[Any], ...] = ()

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        mapper = inspect(self.model)
        (self._key,) = mapper.primary_key
        self._key_name = mapper.get_property_by_column(self._key).key
        self._soft_deletes = issubclass(self.model, SoftDeleteMixin)

    # -- building queries ------------------------------------------------------------------

    def _criteria(
        self,
        where: Iterable[ColumnElement[bool]],
        equal: Mapping[str, Any],
        with_deleted: bool,
    ) -> builtins.list[ColumnElement[bool]]:
        criteria = list(where)
        columns = inspect(self.model).columns
        for name, value in equal.items():
            if name not in columns:
                raise ValueError(f"{self.model.__name__} has no column {name!r}")
            criteria.append(columns[name] == value)
        if self._soft_deletes and not with_deleted:
            criteria.append(columns["deleted_at"].is_(None))
        return criteria

    def _select(
        self, where: Iterable[ColumnElement[bool]], equal: Mapping[str, Any], with_deleted: bool
    ) -> Select[ModelT]:
        query = select(self.model).where(*self._criteria(where, equal, with_deleted))
        return query.options(*(selectinload(relation) for relation in self.eager))

    async def _all(self, query: Select[ModelT]) -> Sequence[ModelT]:
        return (await self.session.scalars(query)).all()

    # -- lookups ---------------------------------------------------------------------------

    async def get(
        self, key: Any, *, for_update: bool = False, with_deleted: bool = False
    ) -> ModelT | None:
        """The row with primary key `key`, or None; `for_update` locks it (SELECT ... FOR
        UPDATE) until the transaction ends."""
        query = self._select([self._key == key], {}, with_deleted)
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query)).one_or_none()

    async def list(
        self,
        *where: ColumnElement[bool],
        order_by: Sequence[ColumnElement[Any] | InstrumentedAttribute[Any]] = (),
        limit: int | None = None,
        for_update: bool = False,
        with_deleted: bool = False,
        **equal: Any,
    ) -> Sequence[ModelT]:
        """Rows matching every filter, in `order_by` order (then by primary key).

        With `for_update` the rows are locked in that order: lock rows of several sessions in
        one agreed order (e.g. by id) and they cannot deadlock.
        """
        query = self._select(where, equal, with_deleted).order_by(*order_by, self._key)
        if limit is not None:
            query = query.limit(limit)
        if for_update:
            query = query.with_for_update()
        return await self._all(query)

    async def count(
        self, *where: ColumnElement[bool], with_deleted: bool = False, **equal: Any
    ) -> int:
        query = select(func.count()).select_from(self.model)
        query = query.where(*self._criteria(where, equal, with_deleted))
        return int((await self.session.execute(query)).scalar_one())

    async def exists(
        self, *where: ColumnElement[bool], with_deleted: bool = False, **equal: Any
    ) -> bool:
        query = select(exists().where(*self._criteria(where, equal, with_deleted)))
        return bool((await self.session.execute(query)).scalar_one())

    async def page(
        self,
        *where: ColumnElement[bool],
        number: int = 1,
        size: int = 50,
        order_by: Sequence[ColumnElement[Any] | InstrumentedAttribute[Any]] = (),
        with_deleted: bool = False,
        **equal: Any,
    ) -> Page[ModelT]:
        """Page `number` (from 1) of `size` rows, with the total: OFFSET reads and discards
        every row before the page, so keep it for small tables (or use `page_after`)."""
        if number < 1:
            raise ValueError(f"page number must be at least 1, got {number}")
        _page_size(size)
        total = await self.count(*where, with_deleted=with_deleted, **equal)
        query = self._select(where, equal, with_deleted).order_by(*order_by, self._key)
        items = await self._all(query.offset((number - 1) * size).limit(size))
        return Page(items, number, size, total)

    async def page_after(
        self,
        order_by: InstrumentedAttribute[Any],
        *where: ColumnElement[bool],
        after: tuple[Any, Any] | None = None,
        size: int = 50,
        descending: bool = False,
        with_deleted: bool = False,
        **equal: Any,
    ) -> KeysetPage[ModelT]:
        """The `size` rows that follow `after` (a previous page's `next_key`; None: the first
        page) in the order of `order_by` then the primary key. Each page is an index range
        scan, however deep: give `order_by` a NOT NULL column with an index."""
        _page_size(size)
        position = tuple_(order_by, self._key)
        query = self._select(where, equal, with_deleted)
        if after is not None:
            start = tuple_(*after)
            query = query.where(position < start if descending else position > start)
        if descending:
            query = query.order_by(order_by.desc(), self._key.desc())
        else:
            query = query.order_by(order_by, self._key)
        rows = await self._all(query.limit(size + 1))
        items = rows[:size]
        if len(rows) <= size:
            return KeysetPage(items, None)
        last = items[-1]
        return KeysetPage(items, (getattr(last, order_by.key), getattr(last, self._key_name)))

    # -- writes ----------------------------------------------------------------------------

    async def create(self, **values: Any) -> ModelT:
        """A new row, flushed: its generated key and server defaults are set."""
        item = self.model(**values)
        self.session.add(item)
        await self.session.flush()
        return item

    async def create_many(self, rows: Iterable[Mapping[str, Any]]) -> builtins.list[ModelT]:
        """New rows in as few INSERT statements as the driver allows (batched, RETURNING)."""
        items = [self.model(**values) for values in rows]
        self.session.add_all(items)
        await self.session.flush()
        return items

    async def update(self, item: ModelT, **values: Any) -> ModelT:
        """Set columns of `item` and flush; an unknown column is a ValueError, nothing set."""
        columns = inspect(self.model).columns
        unknown = sorted(set(values) - set(columns.keys()))
        if unknown:
            raise ValueError(f"{self.model.__name__} has no column {unknown[0]!r}")
        for name, value in values.items():
            setattr(item, name, value)
        await self.session.flush()
        return item

    async def delete(self, item: ModelT) -> None:
        """Delete the row for good (see `soft_delete` for models that keep their rows)."""
        await self.session.delete(item)
        await self.session.flush()

    def _soft(self, item: ModelT) -> SoftDeleteMixin:
        if not isinstance(item, SoftDeleteMixin):
            name = self.model.__name__
            raise TypeError(f"{name} has no deleted_at column: it cannot be soft-deleted")
        return item

    async def soft_delete(self, item: ModelT) -> ModelT:
        """Mark the row deleted (`deleted_at`, the database's clock): lookups stop seeing it."""
        self._soft(item).deleted_at = func.now()
        await self.session.flush()
        await self.session.refresh(item, ["deleted_at"])
        return item

    async def restore(self, item: ModelT) -> ModelT:
        """Undo `soft_delete`: the row is visible again."""
        self._soft(item).deleted_at = None
        await self.session.flush()
        return item
