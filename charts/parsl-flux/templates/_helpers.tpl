{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "parsl-flux.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. The MiniCluster's pods are named after it
("<fullname>-0", ...), so it is kept to 50 characters to leave room for the
pod index and the suffixes the Flux Operator and this chart add.
*/}}
{{- define "parsl-flux.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "parsl-flux.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "parsl-flux.labels" -}}
helm.sh/chart: {{ include "parsl-flux.chart" . }}
{{ include "parsl-flux.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: parsl-flux
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "parsl-flux.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parsl-flux.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The bundle image (repository:tag, the tag defaulting to the chart's appVersion).
*/}}
{{- define "parsl-flux.image" -}}
{{- printf "%s:%s" (required "image.repository is required" .Values.image.repository) (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name and key of the Secret holding the master secret (hex) that both the
driver (FluxExecutor(secret=...) or $PARSL_FLUX_SECRET) and the manager
($PARSL_FLUX_SECRET) use; the manager derives its block key from it.
*/}}
{{- define "parsl-flux.secretName" -}}
{{- default (printf "%s-secret" (include "parsl-flux.fullname" .)) .Values.secret.existingSecret }}
{{- end }}

{{/*
Name of the driver's Service (the address the manager dials by default).
*/}}
{{- define "parsl-flux.driverServiceName" -}}
{{- printf "%s-driver" (include "parsl-flux.fullname" .) }}
{{- end }}

{{/*
Host the manager dials: driver.host, else the driver Service's cluster DNS name.
*/}}
{{- define "parsl-flux.driverHost" -}}
{{- default (printf "%s.%s.svc" (include "parsl-flux.driverServiceName" .) .Release.Namespace) .Values.driver.host }}
{{- end }}

{{/*
The driver endpoint the manager dials: tcp://HOST:PORT.
*/}}
{{- define "parsl-flux.driverURL" -}}
{{- printf "tcp://%s:%d" (include "parsl-flux.driverHost" .) (int .Values.driver.port) }}
{{- end }}

{{/*
Name of the MiniCluster's headless Service (set explicitly so that the lead
broker's DNS name is known: <fullname>-0.<headless>.<namespace>.svc).
*/}}
{{- define "parsl-flux.headlessName" -}}
{{- printf "%s-brokers" (include "parsl-flux.fullname" .) }}
{{- end }}

{{/*
The manager command line: the initial program of the Flux instance, given to
"flux start" by the Flux Operator (launcher mode). "flux env" puts Flux's
Python bindings on PYTHONPATH. The operator word-splits this string without
quoting, so no value in it may contain spaces or quotes (values.schema.json
enforces that).
*/}}
{{- define "parsl-flux.managerCommand" -}}
{{- $m := .Values.manager -}}
{{- $args := list "flux" "env" $m.python "-m" "parsl_flux.allocation.manager"
      "--url" (include "parsl-flux.driverURL" .)
      "--block-id" (toString $m.blockId)
      "--workdir" $m.workdir
      "--driver-timeout" (toString $m.driverTimeout)
      "--runner-host" (printf "%s-0.%s.%s.svc" (include "parsl-flux.fullname" .) (include "parsl-flux.headlessName" .) .Release.Namespace) -}}
{{- concat $args $m.extraArgs | join " " }}
{{- end }}
