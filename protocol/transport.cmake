# flotilla_protocol_mqtt (Paho adapter) and flotilla_broker (Mosquitto harness)
