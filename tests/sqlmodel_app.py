"""A small application on SQLModel, for the call-site tests: its statements run through
SQLModel's Session, so SQLModel's frames sit between SQLAlchemy and this file.

No `from __future__ import annotations`: SQLModel reads the relationship annotations at run time.
"""

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Field, Relationship, Session, SQLModel, select

from exporter.slowlog import context


# Named for this file: SQLModel keeps every table model of the process in one registry.
class CallSiteTeam(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    heroes: list["CallSiteHero"] = Relationship(back_populates="team")


class CallSiteHero(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    team_id: int | None = Field(default=None, foreign_key="callsiteteam.id")
    team: CallSiteTeam | None = Relationship(back_populates="heroes")


def create(engine: Engine, teams: int) -> None:
    SQLModel.metadata.create_all(engine, tables=[CallSiteTeam.__table__, CallSiteHero.__table__])
    with Session(engine) as session:
        session.add_all(CallSiteTeam(heroes=[CallSiteHero(), CallSiteHero()]) for _ in range(teams))
        session.commit()


def slow_teams(engine: Engine) -> list[CallSiteTeam]:
    with Session(engine) as session:
        query = select(CallSiteTeam).where(text("pg_sleep(0.15) IS NOT NULL"))
        return list(session.exec(query).all())  # slow one


def heroes_per_team(engine: Engine) -> list[int]:
    """N+1: one SELECT for the teams, then one per team for its heroes."""
    counts = []
    with Session(engine) as session, context(route="/teams"):
        for team in session.exec(select(CallSiteTeam)):
            counts.append(len(team.heroes))  # lazy load
    return counts
