"""Typed dependencies shared by routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from faceport.api.context import AppContext
from faceport.engine.core import FaceEngine


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


def get_engine(request: Request) -> FaceEngine:
    return get_context(request).engine


ContextDep = Annotated[AppContext, Depends(get_context)]
EngineDep = Annotated[FaceEngine, Depends(get_engine)]
