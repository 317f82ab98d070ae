-- Which Canaria commands Argo CD offers now: the rules of `command_refusal` in canaria/core/engine.py
-- (a test runs both on the same statuses), so a disabled action is one the operator would ignore.
local actions = {}
local status = obj.status or {}
local spec = obj.spec or {}
local phase = status.phase
local analysed = status.canary ~= nil or (status.bakeStartedAt ~= nil and status.stable ~= nil)
local inRollout = analysed and (phase == "Progressing" or phase == "Paused" or phase == "Baking")
local held = spec.paused == true or status.controlPaused == true
local model = spec.model or {}
local rejected = status.rejected
actions["promote"] = {["disabled"] = not inRollout or held}
actions["promote-full"] = {["disabled"] = not inRollout}
actions["pause"] = {["disabled"] = not inRollout or status.controlPaused == true}
actions["resume"] = {["disabled"] = status.controlPaused ~= true}
actions["abort"] = {["disabled"] = not inRollout}
actions["retry"] = {["disabled"] = rejected == nil or rejected.version ~= model.version}
return actions
