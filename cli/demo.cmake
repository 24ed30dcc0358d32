# `flotilla demo` (foundation smoke demo).
target_link_libraries(flotilla PRIVATE flotilla_protocol flotilla_protocol_mqtt flotilla_broker flotilla_security)
