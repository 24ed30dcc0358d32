# `flotilla ota publish|timestamp|rollout` (cli/src/ota_command.cc).
target_link_libraries(flotilla PRIVATE flotilla_rollouts nlohmann_json::nlohmann_json)
