-- Writes the canaria.dev/command annotation exactly as `canaria <action>` does (canaria/core/commands.py:
-- JSON with sorted keys); the operator carries it out once and records it in status.lastCommand.
-- The id is unique per action (seconds and a random part); issuedAt has a one-second resolution, so
-- two actions on one ModelDeployment within the same second count as one.
local id = string.format("%08x%04x", os.time(), math.random(0, 65535))
local fields = {'"action": "' .. action .. '"'}
if full then
  table.insert(fields, '"full": true')
end
table.insert(fields, '"id": "' .. id .. '"')
table.insert(fields, '"issuedAt": "' .. os.date("!%Y-%m-%dT%H:%M:%S+00:00") .. '"')
table.insert(fields, '"user": "argocd"')
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["canaria.dev/command"] = "{" .. table.concat(fields, ", ") .. "}"
return obj
