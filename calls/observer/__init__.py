"""The call observer: one asyncio task per live call, run by the `call-observer` Channels worker.

It is the only writer of a call's events and transcript (see design.md). Other code talks to it only
through `calls.observer.dispatch` (messages on the channel layer), never by importing its internals.
"""
