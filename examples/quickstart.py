"""The README's quick start, as a script.

Start a server and create the account it signs in with::

    bosbase-pubsub serve &
    bosbase-pubsub user create ada@example.com secret-password

then ``python examples/quickstart.py`` (``BOSBASE_PUBSUB_URL`` points it at
another server).
"""

import os

from bosbase_pubsub import BosBase, Message

client = BosBase(os.environ.get("BOSBASE_PUBSUB_URL", "http://127.0.0.1:8090"))
client.collection("users").auth_with_password("ada@example.com", "secret-password")


def on_message(msg: Message) -> None:
    print(msg["topic"], msg["data"])  # keys: id, topic, data, created


unsubscribe = client.pubsub.subscribe("chat/general", on_message)
ack = client.pubsub.publish("chat/general", {"text": "Hello team!"})
print(ack["id"], ack["created"])  # returns {id, topic, created}
unsubscribe()
client.close()
