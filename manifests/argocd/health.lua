-- Argo CD health of a Canaria ModelDeployment (Lua 5.1, as Argo CD runs it).
-- It reads the conditions Canaria's engine decides, so Argo CD, `kubectl wait` and Flux agree:
--   Stalled     -> Degraded     reverted, refused by its gates or invalid: a person must act
--   Ready       -> Healthy      the version the spec names serves at full weight
--   Paused      -> Suspended    a rollout held by spec.paused or `canaria pause`
--   otherwise   -> Progressing  a rollout on its way, or a spec Canaria has not acted on yet
local hs = {status = "Progressing", message = "Waiting for Canaria to act on this ModelDeployment"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.message = "Waiting for Canaria to act on generation " .. generation
  return hs
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  if generation == nil or condition.observedGeneration == generation then
    conditions[condition.type] = condition
  end
end
local function holds(kind)
  return conditions[kind] ~= nil and conditions[kind].status == "True"
end
local function describe(kind)
  return conditions[kind].reason .. ": " .. (conditions[kind].message or "")
end
if holds("Stalled") then
  hs.status = "Degraded"
  hs.message = describe("Stalled")
elseif holds("Ready") then
  hs.status = "Healthy"
  hs.message = describe("Ready")
elseif holds("Reconciling") then
  if conditions.Reconciling.reason == "Paused" then
    hs.status = "Suspended"
  end
  hs.message = describe("Reconciling")
end
return hs
