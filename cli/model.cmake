# `flotilla model ...` (cli/src/model_command.cc): model tools and inference.
target_link_libraries(flotilla PRIVATE flotilla_model)
