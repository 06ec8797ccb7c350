"""Telling the on-call person: email (SMTP) and a Slack-compatible webhook.

    outbox.py      what each alert is owed, the lease, per-channel state and back-off
    transports.py  the channels, one class each (`Email`, `Webhook`), raising TransportError
    messages.py    what the messages say

The SQL of the outbox (the notification columns of `alerts`) is in permafrost/catalog/alerts.py.
"""
