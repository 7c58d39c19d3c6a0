{{/* Chart name. */}}
{{- define "cdc-claims.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release fullname, at most 52 characters so "<fullname>-consumer-metrics" stays a valid name. */}}
{{- define "cdc-claims.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cdc-claims.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "cdc-claims.labels" -}}
helm.sh/chart: {{ include "cdc-claims.chart" . }}
{{ include "cdc-claims.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cdc-claims
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "cdc-claims.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cdc-claims.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one role: call with (dict "ctx" $ "role" "consumer"). */}}
{{- define "cdc-claims.roleLabels" -}}
{{ include "cdc-claims.labels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "cdc-claims.roleSelectorLabels" -}}
{{ include "cdc-claims.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "cdc-claims.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{- define "cdc-claims.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cdc-claims.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cdc-claims.envConfigMapName" -}}
{{- printf "%s-env" (include "cdc-claims.fullname" .) }}
{{- end }}

{{/* mapping.content wins when set (the chart renders it); otherwise the existing ConfigMap. */}}
{{- define "cdc-claims.mappingConfigMapName" -}}
{{- if .Values.mapping.content }}
{{- printf "%s-mapping" (include "cdc-claims.fullname" .) }}
{{- else }}
{{- .Values.mapping.existingConfigMap }}
{{- end }}
{{- end }}

{{- define "cdc-claims.connectName" -}}
{{- default (printf "%s-connect" (include "cdc-claims.fullname" .)) .Values.strimzi.connect.name }}
{{- end }}

{{- define "cdc-claims.connectorName" -}}
{{- default .Values.strimzi.connector.name .Values.prometheusRule.connector.name }}
{{- end }}

{{/* Where mounted files live inside the container. */}}
{{- define "cdc-claims.mappingDir" -}}/etc/cdc-claims/mapping{{- end }}
{{- define "cdc-claims.clientCertDir" -}}/etc/cdc-claims/tls/client{{- end }}
{{- define "cdc-claims.caDir" -}}/etc/cdc-claims/tls/ca{{- end }}
{{- define "cdc-claims.dbCaDir" -}}/etc/cdc-claims/tls/db-ca{{- end }}

{{/* Fail early on inconsistent values instead of rendering a pod that cannot start. */}}
{{- define "cdc-claims.validate" -}}
{{- $usesDb := false }}
{{- $usesHim := false }}
{{- range $role, $r := .Values.roles }}
{{- if $r.enabled }}
{{- if or $r.secrets.dbReader $r.secrets.dbWriter }}{{ $usesDb = true }}{{ end }}
{{- if $r.secrets.openhim }}{{ $usesHim = true }}{{ end }}
{{- end }}
{{- end }}
{{- if and $usesDb (not .Values.database.existingSecret) }}
{{- fail "database.existingSecret is required: name the Secret holding the reader/writer passwords" }}
{{- end }}
{{- if and $usesHim (has .Values.openhim.auth (list "basic" "bearer" "custom")) (not .Values.openhim.existingSecret) }}
{{- fail (printf "openhim.existingSecret is required for openhim.auth=%s" .Values.openhim.auth) }}
{{- end }}
{{- if and $usesHim (eq .Values.openhim.auth "mtls") (not .Values.openhim.clientCertificate.secretName) }}
{{- fail "openhim.clientCertificate.secretName is required for openhim.auth=mtls" }}
{{- end }}
{{- if and $usesHim (eq .Values.openhim.auth "bearer") (not .Values.openhim.tokenUrl) }}
{{- fail "openhim.tokenUrl is required for openhim.auth=bearer" }}
{{- end }}
{{- if and .Values.openhim.caBundle.secretName .Values.openhim.caBundle.configMapName }}
{{- fail "openhim.caBundle: set secretName or configMapName, not both" }}
{{- end }}
{{- if and (empty .Values.mapping.content) (not .Values.mapping.existingConfigMap) }}
{{- fail "mapping.content (or mapping.existingConfigMap) is required: the roles refuse to start without a mapping" }}
{{- end }}
{{- if and (has (toString .Values.payer.checkMappingOnStart) (list "warn" "block")) (not .Values.payer.url) }}
{{- fail (printf "payer.checkMappingOnStart=%s needs payer.url: check-mapping --openimis reads openIMIS's API" (toString .Values.payer.checkMappingOnStart)) }}
{{- end }}
{{- if and .Values.strimzi.connector.enabled (not .Values.strimzi.connector.passwordSecret.name) }}
{{- fail "strimzi.connector.passwordSecret.name is required when strimzi.connector.enabled" }}
{{- end }}
{{- range .Values.strimzi.connector.tables }}
{{- if or (hasPrefix "iclm_" .) (hasPrefix "cdc_claims_" .) (contains ".iclm_" .) }}
{{- fail (printf "strimzi.connector.tables: %q must not be captured (the writer's own iclm_* writes would loop back)" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* env + envFrom of a role's container: call with (dict "ctx" $ "r" <role values>). */}}
{{- define "cdc-claims.containerEnv" -}}
{{- $v := .ctx.Values }}
{{- $r := .r -}}
envFrom:
  - configMapRef:
      name: {{ include "cdc-claims.envConfigMapName" .ctx }}
  {{- with $v.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
env:
  {{- if $r.secrets.dbReader }}
  - name: CDC_CLAIMS_DB__PASSWORD
    valueFrom:
      secretKeyRef: {name: {{ $v.database.existingSecret }}, key: {{ $v.database.readerPasswordKey }}}
  {{- end }}
  {{- if $r.secrets.dbWriter }}
  - name: CDC_CLAIMS_DB__WRITER_PASSWORD
    valueFrom:
      secretKeyRef: {name: {{ $v.database.existingSecret }}, key: {{ $v.database.writerPasswordKey }}}
  {{- end }}
  {{- if $r.secrets.openhim }}
  {{- if has $v.openhim.auth (list "basic" "bearer") }}
  - name: CDC_CLAIMS_OPENHIM__PASSWORD
    valueFrom:
      secretKeyRef: {name: {{ $v.openhim.existingSecret }}, key: {{ $v.openhim.passwordKey }}}
  {{- else if eq $v.openhim.auth "custom" }}
  - name: CDC_CLAIMS_OPENHIM__CUSTOM_TOKEN
    valueFrom:
      secretKeyRef: {name: {{ $v.openhim.existingSecret }}, key: {{ $v.openhim.customTokenKey }}}
  {{- end }}
  {{- if $v.openhim.clientCertificate.secretName }}
  - name: CDC_CLAIMS_OPENHIM__CLIENT_CERT
    value: {{ printf "%s/tls.crt" (include "cdc-claims.clientCertDir" .ctx) | quote }}
  - name: CDC_CLAIMS_OPENHIM__CLIENT_KEY
    value: {{ printf "%s/tls.key" (include "cdc-claims.clientCertDir" .ctx) | quote }}
  {{- end }}
  {{- if or $v.openhim.caBundle.secretName $v.openhim.caBundle.configMapName }}
  - name: CDC_CLAIMS_OPENHIM__CA_BUNDLE
    value: {{ printf "%s/ca.crt" (include "cdc-claims.caDir" .ctx) | quote }}
  {{- end }}
  {{- if $v.payer.url }}
  - name: CDC_CLAIMS_PAYER__PASSWORD
    valueFrom:
      secretKeyRef: {name: {{ $v.payer.existingSecret }}, key: {{ $v.payer.passwordKey }}}
  {{- if or $v.openhim.caBundle.secretName $v.openhim.caBundle.configMapName }}
  # the hospital's private CA (openhim.caBundle) is trusted for openIMIS's API too
  - name: CDC_CLAIMS_PAYER__CA_BUNDLE
    value: {{ printf "%s/ca.crt" (include "cdc-claims.caDir" .ctx) | quote }}
  {{- end }}
  {{- end }}
  {{- end }}
  {{- if $r.secrets.desk }}
  - name: CDC_CLAIMS_DESK__SESSION_SECRET
    valueFrom:
      secretKeyRef: {name: {{ $v.desk.existingSecret }}, key: {{ $v.desk.sessionSecretKey }}}
  {{- if $v.desk.oidc.issuer }}
  - name: CDC_CLAIMS_DESK__OIDC_CLIENT_SECRET
    valueFrom:
      secretKeyRef: {name: {{ $v.desk.existingSecret }}, key: {{ $v.desk.oidc.clientSecretKey }}}
  {{- end }}
  {{- end }}
  {{- if $v.database.tlsCa.secretName }}
  - name: CDC_CLAIMS_DB__TLS_CA
    value: {{ printf "%s/ca.crt" (include "cdc-claims.dbCaDir" .ctx) | quote }}
  {{- end }}
  {{- with $v.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $r.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* volumeMounts of a role's container: call with (dict "ctx" $ "r" <role values>). */}}
{{- define "cdc-claims.volumeMounts" -}}
{{- $v := .ctx.Values -}}
- name: tmp
  mountPath: /tmp
- name: mapping
  mountPath: {{ include "cdc-claims.mappingDir" .ctx }}
  readOnly: true
{{- if $v.database.tlsCa.secretName }}
- name: db-ca
  mountPath: {{ include "cdc-claims.dbCaDir" .ctx }}
  readOnly: true
{{- end }}
{{- if .r.secrets.openhim }}
{{- if $v.openhim.clientCertificate.secretName }}
- name: openhim-client-cert
  mountPath: {{ include "cdc-claims.clientCertDir" .ctx }}
  readOnly: true
{{- end }}
{{- if or $v.openhim.caBundle.secretName $v.openhim.caBundle.configMapName }}
- name: openhim-ca
  mountPath: {{ include "cdc-claims.caDir" .ctx }}
  readOnly: true
{{- end }}
{{- if $v.documents.existingClaim }}
# Bahmni's document store: the files of the documents claims carry (read only)
- name: documents
  mountPath: {{ $v.documents.mountPath }}
  {{- with $v.documents.subPath }}
  subPath: {{ . }}
  {{- end }}
  readOnly: true
{{- end }}
{{- if $v.documents.complexObs.existingClaim }}
- name: complex-obs
  mountPath: {{ $v.documents.complexObs.mountPath }}
  {{- with $v.documents.complexObs.subPath }}
  subPath: {{ . }}
  {{- end }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* PromQL label matchers selecting this release's scrape targets (job = Service name under a ServiceMonitor). */}}
{{- define "cdc-claims.promSelector" -}}
namespace="{{ .Release.Namespace }}",job=~"{{ include "cdc-claims.fullname" . }}-(consumer|writer|poller|desk)"
{{- end }}

{{/* What every pod of the chart shares: service account, security context, pull secrets. */}}
{{- define "cdc-claims.podBasics" -}}
serviceAccountName: {{ include "cdc-claims.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* volumes of a pod (the items): call with (dict "ctx" $ "r" <role values>). */}}
{{- define "cdc-claims.volumes" -}}
{{- $v := .ctx.Values }}
{{- $usesHim := .r.secrets.openhim }}
{{- $ca := $v.openhim.caBundle }}
{{- $cert := $v.openhim.clientCertificate -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
# The whole ConfigMap: the mapping file and the files it names (e.g. icd10.known_codes_file).
- name: mapping
  configMap:
    name: {{ include "cdc-claims.mappingConfigMapName" .ctx }}
{{- with $v.database.tlsCa }}
{{- if .secretName }}
- name: db-ca
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0444
    items:
      - {key: {{ .key }}, path: ca.crt}
{{- end }}
{{- end }}
{{- if and $usesHim $cert.secretName }}
- name: openhim-client-cert
  secret:
    secretName: {{ $cert.secretName }}
    defaultMode: 0440
    items:
      - {key: {{ $cert.certKey }}, path: tls.crt}
      - {key: {{ $cert.keyKey }}, path: tls.key}
{{- end }}
{{- if and $usesHim $ca.secretName }}
- name: openhim-ca
  secret:
    secretName: {{ $ca.secretName }}
    defaultMode: 0444
    items:
      - {key: {{ $ca.key }}, path: ca.crt}
{{- else if and $usesHim $ca.configMapName }}
- name: openhim-ca
  configMap:
    name: {{ $ca.configMapName }}
    defaultMode: 0444
    items:
      - {key: {{ $ca.key }}, path: ca.crt}
{{- end }}
{{- if and $usesHim $v.documents.existingClaim }}
- name: documents
  persistentVolumeClaim:
    claimName: {{ $v.documents.existingClaim }}
    readOnly: true
{{- end }}
{{- if and $usesHim $v.documents.complexObs.existingClaim }}
- name: complex-obs
  persistentVolumeClaim:
    claimName: {{ $v.documents.complexObs.existingClaim }}
    readOnly: true
{{- end }}
{{- end }}

{{/* Where a pod may run: nodeSelector, tolerations, affinity, topology spread. */}}
{{- define "cdc-claims.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
