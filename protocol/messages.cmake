# flotilla_protocol (protos, topics, envelope, Transport interface, fakes)
