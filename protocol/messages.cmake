# flotilla_protocol (protos, topics, envelope, Transport interface, fakes).
# Placeholder until the messages land: headers only.
add_library(flotilla_protocol INTERFACE)
target_include_directories(flotilla_protocol INTERFACE ${CMAKE_CURRENT_SOURCE_DIR}/include)
target_link_libraries(flotilla_protocol INTERFACE flotilla_core)
