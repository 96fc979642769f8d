"""Servicers for xmpl.br.resources-books-v1: your code.

Created by scaffold; from now on this file is yours. BooksService subclasses the generated
base in base.py, which implements Get, List, Create, Update and Delete on Firestore with the
proto's current patterns and fields, including ListBooks' AIP-160 ``filter`` and AIP-132
``order_by``. The example customises nothing, so the class only names the service; override
a method here to customise it.
"""

from __future__ import annotations

import base


class BooksService(base.BooksServiceBase):
    """Manages Book resources."""
