"""Publish inputs: the HTTP control API, ZeroMQ PULL/SUB and the command socket."""
