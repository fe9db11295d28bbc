"""MQTT: the door on its site's broker (docs/mqtt.md).

Events leave through the outbox (``device/events/outbox.py``), written with each access-log
row; :class:`~device.mqtt.publisher.MqttPublisher` sends them, the door's state and its
availability, and Home Assistant's discovery (``topics.py``), and takes commands when
allowed (``commands.py``). ``connection.py`` is the one place that builds a paho client from
``[mqtt]``; ``check.py`` is ``facegate mqtt test``.
"""
