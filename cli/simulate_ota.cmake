# `flotilla simulate ota` (cli/src/simulate_ota_command.cc): the OTA fleet simulator.
if(TARGET flotilla_simulator_ota)
  target_link_libraries(flotilla PRIVATE flotilla_simulator_ota)
  target_compile_definitions(flotilla PRIVATE FLOTILLA_HAVE_OTA_SIMULATOR=1)
endif()
