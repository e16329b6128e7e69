"""The tests' one-off HTTP calls (``plain.get(url, ...)``, as ``httpx.get``), made with
the process's one TLS context.

``httpx.get`` and its kin build a client, and with it a TLS context, for each call:
loading the CA bundle, about 20 ms of CPU, though the tests call plain http emulators
and servers, some of them again and again while they wait for a state. These take
``crmcal.tls``'s context instead; each call is still a client and a connection of its
own, as with ``httpx``.
"""

from __future__ import annotations

import functools

import httpx

from crmcal.tls import tls

get = functools.partial(httpx.get, verify=tls())
post = functools.partial(httpx.post, verify=tls())
delete = functools.partial(httpx.delete, verify=tls())
request = functools.partial(httpx.request, verify=tls())
