"""A small application for the pytest plugin's tests (tests/test_pytest_plugin.py copies it
into each inner test session): authors with books, listed with a lazy load per author (an N+1)
and with `selectinload` (two statements), over a sync Session, an AsyncSession, and a Flask
view."""

from __future__ import annotations

from flask import Flask, request
from sqlalchemy import ForeignKey, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

AUTHORS = 12
BOOKS_PER_AUTHOR = 2


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"), index=True)
    author: Mapped[Author] = relationship(back_populates="books")


def create(engine: Engine) -> None:
    """The tables, with AUTHORS authors of BOOKS_PER_AUTHOR books each."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        for a in range(AUTHORS):
            books = [Book(title=f"book {a}.{b}") for b in range(BOOKS_PER_AUTHOR)]
            session.add(Author(name=f"author {a}", books=books))


def titles_lazy(session: Session, limit: int | None = None) -> list[str]:
    """One SELECT for the authors (the first `limit`), then one per author for its books."""
    titles = []
    for author in session.scalars(select(Author).order_by(Author.id).limit(limit)):
        titles += [book.title for book in author.books]  # lazy load
    return titles


def titles_eager(session: Session) -> list[str]:
    """Two SELECTs: the authors, then all their books at once."""
    query = select(Author).options(selectinload(Author.books)).order_by(Author.id)
    return [book.title for author in session.scalars(query).all() for book in author.books]


async def titles_by_author(session: AsyncSession) -> list[str]:
    """An N+1 written by hand: one SELECT per author id."""
    titles: list[str] = []
    for author_id in range(1, AUTHORS + 1):
        query = select(Book.title).where(Book.author_id == author_id).order_by(Book.id)
        titles += (await session.scalars(query)).all()  # one per author
    return titles


def flask_app(engine: Engine) -> Flask:
    """`/authors/lazy?limit=N` and `/authors/eager` over `engine`."""
    app = Flask(__name__)

    @app.get("/authors/lazy")
    def lazy() -> list[str]:
        with Session(engine) as session:
            return titles_lazy(session, request.args.get("limit", type=int))

    @app.get("/authors/eager")
    def eager() -> list[str]:
        with Session(engine) as session:
            return titles_eager(session)

    return app
