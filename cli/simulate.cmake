# `flotilla simulate` (cli/src/simulate_command.cc): the fleet simulator.
if(TARGET flotilla_simulator)
  target_link_libraries(flotilla PRIVATE flotilla_simulator)
  target_compile_definitions(flotilla PRIVATE FLOTILLA_HAVE_SIMULATOR=1)
endif()
