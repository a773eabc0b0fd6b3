"""The search-space files shipped with espcn-tune (``*.yaml`` beside this file)."""

from pathlib import Path

DIR = Path(__file__).resolve().parent
