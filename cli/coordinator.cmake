# `flotilla pki ...` (cli/src/pki_command.cc) and `flotilla coordinator ...`
# (cli/src/coordinator_command.cc): fleet PKI, the coordinator service, tokens, devices.
target_link_libraries(flotilla PRIVATE flotilla_coordinator)
