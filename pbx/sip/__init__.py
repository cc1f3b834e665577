"""SIP (RFC 3261): messages, parsing, transactions, dialogs and digest, as sans-IO cores.

Pure: ``message`` and ``parse`` (bytes to typed values and back), ``validate`` (the 8.2 checks),
``build`` (responses, CANCEL), ``transaction`` (the 17.1/17.2 state machines and their table),
``dialog`` (12-14, and the B2BUA's crossing of requests between legs), ``digest`` (RFC 7616
authentication), ``framing`` (TCP stream framing), ``entropy`` (the one source of random
tokens). Adapter: ``transport`` (UDP and TCP sockets). ``pbx.service`` runs the cores.
"""
